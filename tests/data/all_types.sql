-- Every column type MariaDB 10.11 offers, with edge values and NULLs: the query cache and
-- the relay must hand each back byte for byte as the server sent it.
SET NAMES utf8mb4;
DROP TABLE IF EXISTS sbtest.qc_types;
CREATE TABLE sbtest.qc_types (
  id INT PRIMARY KEY,
  t TINYINT, su SMALLINT UNSIGNED, m MEDIUMINT, i INT, bu BIGINT UNSIGNED,
  de DECIMAL(30,10), f FLOAT, d DOUBLE, bits BIT(10),
  dt DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL, tm TIME(2), y YEAR,
  ch CHAR(10), vc VARCHAR(100) CHARACTER SET utf8mb4, bin BINARY(4), vb VARBINARY(20),
  tb TINYBLOB, bl BLOB, mt MEDIUMTEXT, lb LONGBLOB,
  e ENUM('red','green','blue'), st SET('a','b','c'), js JSON,
  geo POINT, ip INET6, u UUID
) DEFAULT CHARSET = utf8mb4;
INSERT INTO sbtest.qc_types VALUES
  (1, -128, 65535, -8388608, -2147483648, 18446744073709551615,
   -12345678901234567890.0123456789, 3.14159, -2.718281828459045, b'1010101010',
   '1000-01-01', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999', '-838:59:59.99', 1901,
   'abc', 'Grüße 🍣 ñ', x'00FF10AB', x'DEADBEEF00',
   x'00', REPEAT('b', 1000), REPEAT('Ω', 5000), REPEAT(x'FE', 70000),
   'blue', 'a,c', '{"k": [1, 2.5, null, "x"]}',
   POINT(1.5, -2.25), '2001:db8::ff00:42:8329', '123e4567-e89b-12d3-a456-426614174000'),
  (2, 127, 0, 8388607, 2147483647, 0,
   0.0000000001, -1.5e-10, 1e308, b'0',
   '2024-02-29', '1970-01-01 00:00:00.000001', NULL, '00:00:00', 2155,
   '', '', x'00000000', x'',
   x'', '', '', x'',
   'red', '', '[]',
   POINT(0, 0), '::1', '00000000-0000-0000-0000-000000000000'),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
