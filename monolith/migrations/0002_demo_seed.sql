-- Demo data: 24 shops in 7 categories, 10 menu items each, 120 members and
-- 12 riders. Most shops are open around the clock so the demo works at any
-- hour; four keep real hours (one across midnight, one closed today).

INSERT INTO tb_shop (shop_nm, ctgr_cd, open_hm, close_hm, min_ord_amt, owner_nm, tel_no)
SELECT s.nm, s.ctgr, s.open_hm, s.close_hm, s.min_amt, s.owner, '02-555-' || lpad(s.n::text, 4, '0')
FROM (VALUES
    (1,  '한옥집 김치찌개',   'KOREAN',   '0000', '2400', 12000, '김영희'),
    (2,  '엄마손 백반',       'KOREAN',   '0000', '2400', 10000, '박철수'),
    (3,  '종로 설렁탕',       'KOREAN',   '1000', '2200', 15000, '이순자'),
    (4,  '교촌식 치킨',       'CHICKEN',  '0000', '2400', 18000, '최민수'),
    (5,  '바삭 치킨',         'CHICKEN',  '0000', '2400', 16000, '정다은'),
    (6,  '새벽 치킨',         'CHICKEN',  '1700', '0300', 17000, '한지민'),
    (7,  '나폴리 피자',       'PIZZA',    '0000', '2400', 20000, '오세훈'),
    (8,  '시카고 피자',       'PIZZA',    '0000', '2400', 22000, '유재석'),
    (9,  '홍콩반점',          'CHINESE',  '0000', '2400', 14000, '장동건'),
    (10, '만리장성',          'CHINESE',  '0000', '2400', 15000, '고소영'),
    (11, '북경 짬뽕',         'CHINESE',  '0000', '0000', 13000, '송강호'),
    (12, '스시 오마카세',     'JAPANESE', '0000', '2400', 25000, '전지현'),
    (13, '돈카츠 하우스',     'JAPANESE', '0000', '2400', 15000, '이병헌'),
    (14, '라멘 이치',         'JAPANESE', '0000', '2400', 12000, '김태희'),
    (15, '신당동 떡볶이',     'BUNSIK',   '0000', '2400', 10000, '차태현'),
    (16, '김밥천국',          'BUNSIK',   '0000', '2400',  8000, '하지원'),
    (17, '분식왕',            'BUNSIK',   '1100', '2100',  9000, '강호동'),
    (18, '스타 카페',         'CAFE',     '0000', '2400', 12000, '신민아'),
    (19, '달콤 디저트',       'CAFE',     '0000', '2400', 10000, '조인성'),
    (20, '빵굽는 마을',       'CAFE',     '0000', '2400', 11000, '수지'),
    (21, '부대찌개 명가',     'KOREAN',   '0000', '2400', 16000, '이민호'),
    (22, '닭갈비 골목',       'KOREAN',   '0000', '2400', 18000, '박보검'),
    (23, '양념 치킨 본가',    'CHICKEN',  '0000', '2400', 17000, '아이유'),
    (24, '화덕 피자',         'PIZZA',    '0000', '2400', 21000, '공유')
) AS s(n, nm, ctgr, open_hm, close_hm, min_amt, owner)
ORDER BY s.n;

-- Ten dishes per shop, from its category's list, priced in 500-won steps.
INSERT INTO tb_menu (shop_id, menu_nm, price, sale_yn)
SELECT sh.shop_id,
       d.dishes[i],
       (d.base + ((sh.shop_id * 7 + i * 3) % 12) * 500)::integer,
       CASE WHEN i = 10 AND sh.shop_id % 5 = 0 THEN 'N' ELSE 'Y' END
FROM tb_shop sh
JOIN (VALUES
    ('KOREAN',   6000,  ARRAY['김치찌개','된장찌개','제육볶음','불고기','비빔밥','순두부찌개','갈비탕','육개장','계란말이','공기밥']),
    ('CHICKEN',  15000, ARRAY['후라이드','양념치킨','간장치킨','반반치킨','파닭','순살치킨','닭강정','치킨무','콜라 1.25L','감자튀김']),
    ('PIZZA',    14000, ARRAY['페퍼로니','불고기 피자','포테이토','콤비네이션','고르곤졸라','하와이안','치즈 피자','스파게티','치즈스틱','콜라 1.25L']),
    ('CHINESE',  6000,  ARRAY['짜장면','짬뽕','탕수육','볶음밥','잡채밥','마파두부','깐풍기','군만두','울면','간짜장']),
    ('JAPANESE', 8000,  ARRAY['모둠초밥','연어초밥','로스카츠','히레카츠','돈코츠라멘','우동','규동','가라아게','냉소바','미소시루']),
    ('BUNSIK',   3000,  ARRAY['떡볶이','순대','튀김','김밥','라볶이','어묵','쫄면','만두','치즈김밥','오므라이스']),
    ('CAFE',     3000,  ARRAY['아메리카노','카페라떼','바닐라라떼','딸기케이크','치즈케이크','마카롱','크로플','스콘','아이스티','레몬에이드'])
) AS d(ctgr, base, dishes) ON d.ctgr = sh.ctgr_cd
CROSS JOIN generate_series(1, 10) AS i
ORDER BY sh.shop_id, i;

INSERT INTO tb_member (mbr_nm, tel_no, addr)
SELECT (ARRAY['김','이','박','최','정','강','조','윤','장','임'])[1 + n % 10]
       || (ARRAY['민준','서연','도윤','하은','시우','지우','주원','서윤','하준','지민','은우','수아'])[1 + n % 12],
       '010-' || lpad((1000 + n)::text, 4, '0') || '-' || lpad((n * 37 % 10000)::text, 4, '0'),
       '서울시 ' || (ARRAY['강남구','서초구','마포구','송파구','종로구','용산구'])[1 + n % 6]
       || ' 테헤란로 ' || n || '길 ' || (n % 40 + 1)
FROM generate_series(1, 120) AS n
ORDER BY n;

INSERT INTO tb_rider (rider_nm, tel_no)
SELECT '라이더' || lpad(n::text, 2, '0'), '010-9' || lpad(n::text, 3, '0') || '-' || lpad((n * 91)::text, 4, '0')
FROM generate_series(1, 12) AS n
ORDER BY n;
