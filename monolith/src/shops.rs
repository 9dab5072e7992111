//! Shops and menus: the read side of the catalogue.

use serde::Serialize;
use sqlx::PgPool;

use crate::clock;
use crate::error::Fail;

pub const CATEGORIES: [&str; 7] = [
    "KOREAN", "CHICKEN", "PIZZA", "CHINESE", "JAPANESE", "BUNSIK", "CAFE",
];

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Shop {
    pub shop_id: i64,
    #[sqlx(rename = "shop_nm")]
    pub name: String,
    #[sqlx(rename = "ctgr_cd")]
    pub category: String,
    #[serde(skip)]
    pub open_hm: String,
    #[serde(skip)]
    pub close_hm: String,
    /// `HH:MM`, Korean time.
    #[sqlx(skip)]
    pub opens_at: String,
    #[sqlx(skip)]
    pub closes_at: String,
    #[sqlx(skip)]
    pub open_now: bool,
    #[sqlx(rename = "min_ord_amt")]
    pub min_order_amount: i32,
    #[sqlx(rename = "tel_no")]
    pub phone: String,
}

impl Shop {
    fn with_hours(mut self, now: u16) -> Self {
        self.opens_at = clock::display_hm(&self.open_hm);
        self.closes_at = clock::display_hm(&self.close_hm);
        self.open_now = match (
            clock::parse_hm(&self.open_hm),
            clock::parse_hm(&self.close_hm),
        ) {
            (Some(open), Some(close)) => clock::is_open(open, close, now),
            _ => false,
        };
        self
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MenuItem {
    pub menu_id: i64,
    #[sqlx(rename = "menu_nm")]
    pub name: String,
    pub price: i32,
    pub on_sale: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShopWithMenu {
    #[serde(flatten)]
    pub shop: Shop,
    pub menu: Vec<MenuItem>,
}

/// Shops in use, optionally of one category and only those open now.
pub async fn list(db: &PgPool, category: Option<&str>, open_only: bool) -> Result<Vec<Shop>, Fail> {
    if let Some(category) = category
        && !CATEGORIES.contains(&category)
    {
        return Err(Fail::invalid(
            "unknown-category",
            "Unknown category",
            format!("category is one of {}.", CATEGORIES.join(", ")),
        ));
    }
    let shops: Vec<Shop> = sqlx::query_as(
        "SELECT shop_id, shop_nm, ctgr_cd, open_hm, close_hm, min_ord_amt, tel_no
         FROM tb_shop
         WHERE use_yn = 'Y' AND ($1::varchar IS NULL OR ctgr_cd = $1)
         ORDER BY shop_id",
    )
    .bind(category)
    .fetch_all(db)
    .await?;
    let now = clock::minutes_now();
    Ok(shops
        .into_iter()
        .map(|s| s.with_hours(now))
        .filter(|s| !open_only || s.open_now)
        .collect())
}

pub async fn find(db: &PgPool, shop_id: i64) -> Result<Shop, Fail> {
    let shop: Option<Shop> = sqlx::query_as(
        "SELECT shop_id, shop_nm, ctgr_cd, open_hm, close_hm, min_ord_amt, tel_no
         FROM tb_shop WHERE shop_id = $1 AND use_yn = 'Y'",
    )
    .bind(shop_id)
    .fetch_optional(db)
    .await?;
    shop.map(|s| s.with_hours(clock::minutes_now()))
        .ok_or_else(|| unknown_shop(shop_id))
}

pub async fn with_menu(db: &PgPool, shop_id: i64) -> Result<ShopWithMenu, Fail> {
    let shop = find(db, shop_id).await?;
    let menu = sqlx::query_as(
        "SELECT menu_id, menu_nm, price, sale_yn = 'Y' AS on_sale
         FROM tb_menu WHERE shop_id = $1 ORDER BY menu_id",
    )
    .bind(shop_id)
    .fetch_all(db)
    .await?;
    Ok(ShopWithMenu { shop, menu })
}

pub fn unknown_shop(shop_id: i64) -> Fail {
    Fail::not_found(
        "unknown-shop",
        "Unknown shop",
        format!("There is no shop {shop_id}."),
    )
}
