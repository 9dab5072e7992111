-- Baedal's schema, as a legacy system has it: tb_ tables, abbreviated column
-- names, status codes as two-character strings, hours as 'HHMM' text,
-- amounts in integer won, reg_dt/upd_dt on every row. The anti-corruption
-- layer translates this into the new domain model later; the shape stays.

CREATE TABLE tb_member (
    mbr_id      bigserial PRIMARY KEY,
    mbr_nm      varchar(50)  NOT NULL,
    tel_no      varchar(20)  NOT NULL,
    addr        varchar(200) NOT NULL,
    reg_dt      timestamptz  NOT NULL DEFAULT now(),
    upd_dt      timestamptz  NOT NULL DEFAULT now()
);

CREATE TABLE tb_shop (
    shop_id     bigserial PRIMARY KEY,
    shop_nm     varchar(100) NOT NULL,
    -- KOREAN, CHICKEN, PIZZA, CHINESE, JAPANESE, BUNSIK, CAFE
    ctgr_cd     varchar(20)  NOT NULL,
    -- Opening hours in Korean time, 'HHMM'; close before open crosses midnight,
    -- '0000'-'2400' is always open, equal times mean closed all day.
    open_hm     char(4)      NOT NULL CHECK (open_hm ~ '^([01][0-9]|2[0-3])[0-5][0-9]$'),
    close_hm    char(4)      NOT NULL CHECK (close_hm ~ '^(([01][0-9]|2[0-3])[0-5][0-9]|2400)$'),
    min_ord_amt integer      NOT NULL CHECK (min_ord_amt >= 0),
    owner_nm    varchar(50)  NOT NULL,
    tel_no      varchar(20)  NOT NULL,
    use_yn      char(1)      NOT NULL DEFAULT 'Y' CHECK (use_yn IN ('Y', 'N')),
    reg_dt      timestamptz  NOT NULL DEFAULT now(),
    upd_dt      timestamptz  NOT NULL DEFAULT now()
);

CREATE TABLE tb_menu (
    menu_id     bigserial PRIMARY KEY,
    shop_id     bigint       NOT NULL REFERENCES tb_shop,
    menu_nm     varchar(100) NOT NULL,
    price       integer      NOT NULL CHECK (price > 0),
    sale_yn     char(1)      NOT NULL DEFAULT 'Y' CHECK (sale_yn IN ('Y', 'N')),
    reg_dt      timestamptz  NOT NULL DEFAULT now(),
    upd_dt      timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX ix_menu_shop ON tb_menu (shop_id);

CREATE TABLE tb_rider (
    rider_id      bigserial PRIMARY KEY,
    rider_nm      varchar(50) NOT NULL,
    tel_no        varchar(20) NOT NULL,
    -- IDLE or BUSY
    rider_stat_cd varchar(10) NOT NULL DEFAULT 'IDLE' CHECK (rider_stat_cd IN ('IDLE', 'BUSY')),
    reg_dt        timestamptz NOT NULL DEFAULT now(),
    upd_dt        timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE sq_ord_no;

CREATE TABLE tb_order (
    -- 'YYYYMMDD-NNNNNN', the date in Korean time
    ord_no      varchar(20)  PRIMARY KEY,
    mbr_id      bigint       NOT NULL REFERENCES tb_member,
    shop_id     bigint       NOT NULL REFERENCES tb_shop,
    -- 10 ordered, 20 paid, 30 accepted, 40 picked up, 50 delivered,
    -- 80 rejected, 90 cancelled
    ord_stat_cd char(2)      NOT NULL CHECK (ord_stat_cd IN ('10', '20', '30', '40', '50', '80', '90')),
    tot_amt     bigint       NOT NULL CHECK (tot_amt > 0),
    dlv_addr    varchar(200) NOT NULL,
    req_msg     varchar(200),
    -- MEMBER, SHOP (rejected), PAY_DECLINED, PAY_ERROR
    cncl_rsn_cd varchar(20),
    reg_dt      timestamptz  NOT NULL DEFAULT now(),
    upd_dt      timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX ix_order_member ON tb_order (mbr_id, reg_dt DESC);
CREATE INDEX ix_order_shop ON tb_order (shop_id, ord_stat_cd);

CREATE TABLE tb_order_item (
    ord_no      varchar(20)  NOT NULL REFERENCES tb_order,
    item_seq    integer      NOT NULL,
    menu_id     bigint       NOT NULL REFERENCES tb_menu,
    -- Name and price as they were when ordered.
    menu_nm     varchar(100) NOT NULL,
    unit_price  integer      NOT NULL,
    qty         integer      NOT NULL CHECK (qty BETWEEN 1 AND 99),
    amt         bigint       NOT NULL,
    PRIMARY KEY (ord_no, item_seq)
);

CREATE TABLE tb_payment (
    pay_id      bigserial    PRIMARY KEY,
    ord_no      varchar(20)  NOT NULL UNIQUE REFERENCES tb_order,
    -- REQ sent to the PG, AUTH approved, DECL declined, VOID_REQ to be voided
    -- (the answer never came), VOID voided, RFND_REQ refund owed, RFND refunded
    pay_stat_cd varchar(10)  NOT NULL CHECK (pay_stat_cd IN ('REQ', 'AUTH', 'DECL', 'VOID_REQ', 'VOID', 'RFND_REQ', 'RFND')),
    pay_amt     bigint       NOT NULL,
    -- The PG's payment id, once known.
    pg_tid      varchar(64),
    -- The Idempotency-Key of the authorisation: a retry never charges twice.
    pg_idem_key varchar(100) NOT NULL UNIQUE,
    reg_dt      timestamptz  NOT NULL DEFAULT now(),
    upd_dt      timestamptz  NOT NULL DEFAULT now()
);

CREATE TABLE tb_delivery (
    ord_no      varchar(20)  PRIMARY KEY REFERENCES tb_order,
    rider_id    bigint       REFERENCES tb_rider,
    -- WAIT (no free rider yet), ASSIGNED, PICKED_UP, DELIVERED
    dlv_stat_cd varchar(10)  NOT NULL CHECK (dlv_stat_cd IN ('WAIT', 'ASSIGNED', 'PICKED_UP', 'DELIVERED')),
    assign_dt   timestamptz,
    pickup_dt   timestamptz,
    done_dt     timestamptz,
    reg_dt      timestamptz  NOT NULL DEFAULT now(),
    upd_dt      timestamptz  NOT NULL DEFAULT now()
);

-- A client's Idempotency-Key on POST /api/orders, per member: the first
-- answer is kept and replayed to retries.
CREATE TABLE tb_idem_req (
    mbr_id      bigint       NOT NULL,
    idem_key    varchar(100) NOT NULL,
    -- What the request asked, so a key reused for another request is refused.
    req_hash    varchar(64)  NOT NULL,
    -- P processing, D done
    stat_cd     char(1)      NOT NULL CHECK (stat_cd IN ('P', 'D')),
    ord_no      varchar(20),
    res_status  integer,
    res_body    text,
    reg_dt      timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (mbr_id, idem_key)
);
