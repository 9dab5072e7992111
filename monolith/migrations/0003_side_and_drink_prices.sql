-- Sides and drinks priced like sides and drinks (issue #19): the demo seed
-- priced every item from its category's base, so a 1.25 L cola cost as
-- much as fried chicken. Existing databases get the new prices from this
-- migration; `make seed` applies it again after the demo data (lib.rs,
-- DEMO_DATA), so a reseeded database agrees. Orders keep the prices they
-- were placed at (tb_order_item).
UPDATE tb_menu
SET price = CASE menu_nm
        WHEN '공기밥'      THEN 1000
        WHEN '치킨무'      THEN 500
        WHEN '콜라 1.25L'  THEN 2500
        WHEN '감자튀김'    THEN 3500
        WHEN '치즈스틱'    THEN 4500
        WHEN '군만두'      THEN 5000
        WHEN '미소시루'    THEN 2000
        WHEN '계란말이'    THEN 6000
    END,
    upd_dt = now()
WHERE menu_nm IN ('공기밥', '치킨무', '콜라 1.25L', '감자튀김', '치즈스틱', '군만두', '미소시루', '계란말이');
