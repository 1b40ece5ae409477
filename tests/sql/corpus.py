"""Tricky statements with the verdict each must get: the classifier's acceptance corpus.

Each case: statement, dialect, expected category, expected replica_safe, expected tables.
Used by tests/sql/test_classify.py and benchmarks/bench_classify.py.
"""

from __future__ import annotations

from typing import NamedTuple


class Case(NamedTuple):
    """One corpus statement and its expected classification."""

    sql: str
    dialect: str
    category: str
    replica_safe: bool
    tables: frozenset[str]


def _t(*names: str) -> frozenset[str]:
    return frozenset(names)


PG, MY, LITE = "postgres", "mysql", "sqlite"
RS, RC, WS, WB = "read_simple", "read_complex", "write_simple", "write_bulk"
DDL, TX, SS, UNK = "ddl", "transaction", "session_state", "unknown"

# fmt: off
CORPUS: tuple[Case, ...] = (
    # plain reads the original regex classifier got wrong
    Case("SELECT 1", PG, RS, True, _t()),
    Case("SELECT now()", PG, RS, True, _t()),
    Case("select current_timestamp, version()", PG, RS, True, _t()),
    Case("SELECT * FROM users WHERE name = 'JOIN' AND note = 'UNION'", PG, RS, True, _t("users")),
    Case("SELECT DISTINCT a FROM t ORDER BY a", PG, RS, True, _t("t")),
    Case("SELECT id, name FROM public.users WHERE id = $1", PG, RS, True, _t("public.users")),
    Case('SELECT * FROM "Public"."Users" WHERE id = ?', PG, RS, True, _t("public.users")),
    Case("SELECT count(*), max(created_at) FROM orders WHERE status = :status", PG, RS, True,
         _t("orders")),
    Case("TABLE accounts", PG, RS, True, _t("accounts")),
    Case("VALUES (1, 'a'), (2, 'b'), (3, 'c')", PG, RS, True, _t()),
    Case("SELECT * FROM items WHERE tags ?| array['a','b'] AND id = $1", PG, RS, True,
         _t("items")),
    Case("SELECT * FROM t -- DELETE FROM t\nWHERE id = 1", PG, RS, True, _t("t")),
    Case("/* DELETE everything */ SELECT a FROM t", PG, RS, True, _t("t")),
    Case("SELECT 'DELETE FROM t; DROP TABLE t' AS s", PG, RS, True, _t()),
    Case("SELECT * FROM generate_series(1, 10) AS g", PG, RS, True, _t()),
    Case("SELECT coalesce(a, 0), lower(b), date_trunc('day', ts) FROM t LIMIT 10", PG, RS,
         True, _t("t")),
    # complex reads
    Case("SELECT * FROM (SELECT id FROM t) s", PG, RC, True, _t("t")),
    Case("SELECT * FROM t WHERE id IN (SELECT tid FROM u)", PG, RC, True, _t("t", "u")),
    Case("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)", PG, RC, True,
         _t("t", "u")),
    Case("SELECT a.id FROM a JOIN b ON a.id = b.a_id", PG, RC, True, _t("a", "b")),
    Case("SELECT a.id FROM a, b WHERE a.id = b.a_id", PG, RC, True, _t("a", "b")),
    Case("SELECT status, count(*) FROM orders GROUP BY status HAVING count(*) > 5", PG, RC,
         True, _t("orders")),
    Case("SELECT id FROM a UNION SELECT id FROM b", PG, RC, True, _t("a", "b")),
    Case("(SELECT id FROM a) INTERSECT (SELECT id FROM b)", PG, RC, True, _t("a", "b")),
    Case("SELECT id, row_number() OVER (PARTITION BY g ORDER BY ts) FROM events", PG, RC,
         True, _t("events")),
    Case("WITH recent AS (SELECT * FROM orders WHERE ts > now() - interval '1 day') "
         "SELECT * FROM recent JOIN users u ON u.id = recent.user_id", PG, RC, True,
         _t("orders", "users")),
    Case("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) "
         "SELECT n FROM r", PG, RC, True, _t()),
    Case("EXPLAIN SELECT * FROM t WHERE id = 1", PG, RS, True, _t("t")),
    Case("EXPLAIN ANALYZE SELECT a FROM t JOIN u ON t.id = u.id", PG, RC, True, _t("t", "u")),
    Case("EXPLAIN (ANALYZE, BUFFERS) SELECT 1", PG, RS, True, _t()),
    # reads that must stay on the primary
    Case("SELECT * FROM jobs WHERE id = $1 FOR UPDATE", PG, WS, False, _t("jobs")),
    Case("SELECT * FROM jobs FOR NO KEY UPDATE", PG, WS, False, _t("jobs")),
    Case("SELECT * FROM jobs ORDER BY id LIMIT 10 FOR SHARE SKIP LOCKED", PG, WS, False,
         _t("jobs")),
    Case("SELECT * FROM jobs FOR KEY SHARE", PG, WS, False, _t("jobs")),
    Case("SELECT * FROM (SELECT * FROM jobs FOR UPDATE) s", PG, WS, False, _t("jobs")),
    Case("SELECT * FROM a JOIN b ON a.id = b.id FOR UPDATE OF a NOWAIT", PG, WS, False,
         _t("a", "b")),
    Case("SELECT nextval('orders_id_seq')", PG, WS, False, _t()),
    Case("SELECT setval('orders_id_seq', 42)", PG, WS, False, _t()),
    Case("SELECT currval('orders_id_seq')", PG, SS, False, _t()),
    Case("SELECT pg_advisory_lock(42)", PG, SS, False, _t()),
    Case("SELECT pg_try_advisory_xact_lock(1, 2)", PG, SS, False, _t()),
    Case("SELECT set_config('app.user', 'x', false)", PG, SS, False, _t()),
    Case("SELECT txid_current()", PG, WS, False, _t()),
    Case("SELECT pg_notify('chan', 'payload')", PG, SS, False, _t()),
    Case("SELECT * FROM dblink('dbname=x', 'DELETE FROM t') AS r(a int)", PG, UNK, False, _t()),
    Case("SELECT my_func(id) FROM t", PG, UNK, False, _t("t")),
    Case("SELECT evil.lower(name) FROM t", PG, UNK, False, _t("t")),
    Case("SELECT * INTO archive FROM orders", PG, DDL, False, _t("archive", "orders")),
    Case("SELECT * INTO TEMP scratch FROM orders", PG, SS, False, _t("scratch", "orders")),
    Case("SELECT * FROM pg_temp.scratch", PG, SS, False, _t("pg_temp.scratch")),
    Case("SHOW search_path", PG, SS, False, _t()),
    # data-modifying CTEs
    Case("WITH moved AS (DELETE FROM queue WHERE id = $1 RETURNING *) SELECT * FROM moved",
         PG, WS, False, _t("queue")),
    Case("WITH u AS (UPDATE accounts SET balance = balance - 1 WHERE id = 1 RETURNING id) "
         "SELECT count(*) FROM u", PG, WS, False, _t("accounts")),
    Case("WITH i AS (INSERT INTO log (msg) VALUES ('a'), ('b') RETURNING id) SELECT * FROM i",
         PG, WB, False, _t("log")),
    Case("WITH src AS (SELECT * FROM staging) INSERT INTO t SELECT * FROM src", PG, WB, False,
         _t("staging", "t")),
    # writes
    Case("INSERT INTO users (name) VALUES ($1)", PG, WS, False, _t("users")),
    Case("INSERT INTO t (a) VALUES (1), (2), (3)", PG, WB, False, _t("t")),
    Case("INSERT INTO t (a) VALUES (1), (2)", PG, WB, False, _t("t")),
    Case("INSERT INTO archive SELECT * FROM orders WHERE ts < now()", PG, WB, False,
         _t("archive", "orders")),
    Case("INSERT INTO t (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = t.n + 1",
         PG, WS, False, _t("t")),
    Case("UPDATE t SET a = 1 WHERE id = 2", PG, WS, False, _t("t")),
    Case("UPDATE t SET a = s.a FROM s WHERE t.id = s.id", PG, WS, False, _t("s", "t")),
    Case("DELETE FROM t WHERE id = 1 RETURNING id", PG, WS, False, _t("t")),
    Case("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v "
         "WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)", PG, WS, False, _t("s", "t")),
    Case("COPY t FROM stdin", PG, WB, False, _t("t")),
    Case("COPY t (a, b) TO STDOUT WITH (FORMAT csv)", PG, WB, False, _t("t")),
    Case("COPY (SELECT * FROM t WHERE a > 1) TO stdout", PG, WB, False, _t("t")),
    Case("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", PG, WS, False, _t("t")),
    Case("EXPLAIN INSERT INTO t VALUES (1)", PG, WS, False, _t("t")),
    # DDL and maintenance
    Case("CREATE TABLE t (id int primary key)", PG, DDL, False, _t("t")),
    Case("ALTER TABLE t ADD COLUMN b text", PG, DDL, False, _t("t")),
    Case("DROP TABLE a, b", PG, DDL, False, _t("a", "b")),
    Case("CREATE INDEX t_a ON t (a)", PG, DDL, False, _t("t")),
    Case("TRUNCATE t", PG, DDL, False, _t("t")),
    Case("VACUUM (VERBOSE, ANALYZE) t", PG, DDL, False, _t("t")),
    Case("ANALYZE t", PG, DDL, False, _t("t")),
    Case("GRANT SELECT ON t, u TO reader", PG, DDL, False, _t("t", "u")),
    Case("REVOKE ALL ON t FROM reader", PG, DDL, False, _t("t")),
    Case("COMMENT ON TABLE t IS 'DELETE me'", PG, DDL, False, _t("t")),
    Case("REINDEX TABLE t", PG, DDL, False, _t("t")),
    Case("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", PG, DDL, False, _t("mv")),
    Case("CREATE TEMP TABLE scratch (id int)", PG, SS, False, _t("scratch")),
    Case("CREATE TEMPORARY TABLE scratch AS SELECT * FROM t", PG, SS, False,
         _t("scratch", "t")),
    # transaction control
    Case("BEGIN", PG, TX, False, _t()),
    Case("BEGIN ISOLATION LEVEL SERIALIZABLE", PG, TX, False, _t()),
    Case("START TRANSACTION", PG, TX, False, _t()),
    Case("COMMIT", PG, TX, False, _t()),
    Case("END", PG, TX, False, _t()),
    Case("ROLLBACK", PG, TX, False, _t()),
    Case("SAVEPOINT s1", PG, TX, False, _t()),
    Case("RELEASE SAVEPOINT s1", PG, TX, False, _t()),
    Case("ROLLBACK TO SAVEPOINT s1", PG, TX, False, _t()),
    Case("PREPARE TRANSACTION 'tx1'", PG, TX, False, _t()),
    Case("COMMIT PREPARED 'tx1'", PG, TX, False, _t()),
    # session state
    Case("SET search_path TO app, public", PG, SS, False, _t()),
    Case("SET LOCAL statement_timeout = '5s'", PG, SS, False, _t()),
    Case("SET SESSION timezone = 'UTC'", PG, SS, False, _t()),
    Case("RESET ALL", PG, SS, False, _t()),
    Case("LISTEN jobs", PG, SS, False, _t()),
    Case("UNLISTEN *", PG, SS, False, _t()),
    Case("NOTIFY jobs, 'go'", PG, SS, False, _t()),
    Case("DISCARD ALL", PG, SS, False, _t()),
    Case("DECLARE c CURSOR FOR SELECT * FROM t", PG, SS, False, _t()),
    Case("PREPARE q (int) AS SELECT * FROM t WHERE id = $1", PG, SS, False, _t()),
    Case("EXECUTE q(1)", PG, SS, False, _t()),
    Case("DEALLOCATE q", PG, SS, False, _t()),
    Case("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", PG, SS, False, _t("t")),
    # multi-statement strings
    Case("SELECT 1; DELETE FROM t", PG, WS, False, _t("t")),
    Case("SELECT * FROM a; SELECT * FROM b", PG, RS, False, _t("a", "b")),
    Case("BEGIN; UPDATE t SET a = 1; COMMIT", PG, TX, False, _t("t")),
    # route hints
    Case("/* route:primary */ SELECT * FROM t", PG, RS, False, _t("t")),
    Case("SELECT * FROM t /* route:replica */", PG, RS, True, _t("t")),
    Case("/* route:replica */ SELECT my_func(id) FROM t", PG, RS, True, _t("t")),
    Case("/* route:replica */ DELETE FROM t", PG, WS, False, _t("t")),
    Case("/* route:replica */ SELECT * FROM t FOR UPDATE", PG, WS, False, _t("t")),
    Case("SELECT '/* route:replica */', nextval('s')", PG, WS, False, _t()),
    # garbage and unrecognised
    Case("garbage text here", PG, UNK, False, _t()),
    Case("SELEC * FRM t", PG, UNK, False, _t()),
    Case("SELECT FROM WHERE", PG, UNK, False, _t()),
    Case("SELECT 'unterminated", PG, UNK, False, _t()),
    Case("", PG, UNK, False, _t()),
    Case("-- only a comment", PG, UNK, False, _t()),
    Case("CALL do_things()", PG, UNK, False, _t()),
    Case("DO $$ BEGIN DELETE FROM t; END $$", PG, UNK, False, _t()),
    Case("UPSERT INTO t VALUES (1)", PG, UNK, False, _t()),
    # MySQL / MariaDB
    Case("SELECT * FROM `db`.`Users` WHERE `name` = %s", MY, RS, True, _t("db.users")),
    Case("SELECT * FROM t WHERE a LIKE 'x%' AND id = %s", MY, RS, True, _t("t")),
    Case("SELECT * FROM t WHERE id = ? LOCK IN SHARE MODE", MY, WS, False, _t("t")),
    Case("SELECT * FROM t WHERE id = 1 FOR UPDATE", MY, WS, False, _t("t")),
    Case("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", MY, SS, False, _t("t")),
    Case("SELECT FOUND_ROWS()", MY, SS, False, _t()),
    Case("SELECT LAST_INSERT_ID()", MY, SS, False, _t()),
    Case("SELECT GET_LOCK('job', 10)", MY, SS, False, _t()),
    Case("SELECT @uid", MY, SS, False, _t()),
    Case("SELECT * FROM t /*!50000 FOR UPDATE */", MY, SS, False, _t("t")),
    Case("SELECT NOW(), IFNULL(a, 0), DATE_FORMAT(ts, '%Y') FROM t", MY, RS, True, _t("t")),
    Case("REPLACE INTO t (id, v) VALUES (1, 'a')", MY, WS, False, _t("t")),
    Case("REPLACE INTO t (id) VALUES (1), (2)", MY, WB, False, _t("t")),
    Case("INSERT INTO t (id, n) VALUES (%s, 1) ON DUPLICATE KEY UPDATE n = n + 1", MY, WS,
         False, _t("t")),
    Case("INSERT INTO t SET a = 1", MY, WS, False, _t("t")),
    Case("LOAD DATA LOCAL INFILE '/tmp/x.csv' INTO TABLE t", MY, WB, False, _t("t")),
    Case("USE shop", MY, SS, False, _t()),
    Case("SHOW TABLES", MY, RS, True, _t()),
    Case("SHOW FULL COLUMNS FROM t", MY, RS, True, _t()),
    Case("SHOW VARIABLES LIKE 'max%'", MY, SS, False, _t()),
    Case("SHOW WARNINGS", MY, SS, False, _t()),
    Case("DESCRIBE t", MY, RS, True, _t("t")),
    Case("SET NAMES utf8mb4", MY, SS, False, _t()),
    Case("SET SESSION sql_mode = ''", MY, SS, False, _t()),
    Case("START TRANSACTION READ ONLY", MY, TX, False, _t()),
    Case("LOCK TABLES a READ, b WRITE", MY, SS, False, _t("a", "b")),
    Case("UNLOCK TABLES", MY, SS, False, _t()),
    Case("RENAME TABLE a TO b", MY, DDL, False, _t("a", "b")),
    Case("OPTIMIZE TABLE t", MY, DDL, False, _t("t")),
    Case("SELECT * FROM t INTO OUTFILE '/tmp/x'", MY, UNK, False, _t()),
    Case("SELECT a INTO @x FROM t", MY, SS, False, _t("t")),
    # SQLite
    Case("SELECT * FROM t WHERE id = ?", LITE, RS, True, _t("t")),
    Case("SELECT datetime('now'), ifnull(a, 0) FROM t WHERE id = :id", LITE, RS, True, _t("t")),
    Case("SELECT last_insert_rowid()", LITE, SS, False, _t()),
    Case("SELECT changes()", LITE, SS, False, _t()),
    Case("PRAGMA table_info(t)", LITE, SS, False, _t()),
    Case("PRAGMA journal_mode = wal", LITE, SS, False, _t()),
    Case("INSERT OR REPLACE INTO t (id) VALUES (?)", LITE, WS, False, _t("t")),
    Case("INSERT OR IGNORE INTO t (id) VALUES (1), (2), (3)", LITE, WB, False, _t("t")),
    Case("REPLACE INTO t (id) VALUES (1)", LITE, WS, False, _t("t")),
    Case("ATTACH DATABASE 'other.db' AS other", LITE, SS, False, _t()),
    Case("DETACH DATABASE other", LITE, SS, False, _t()),
    Case("BEGIN IMMEDIATE", LITE, TX, False, _t()),
    Case("VACUUM", LITE, DDL, False, _t()),
    Case("CREATE TEMP TABLE x (a)", LITE, SS, False, _t("x")),
    Case("EXPLAIN QUERY PLAN SELECT * FROM t WHERE id = ?", LITE, RS, True, _t("t")),
    # several statements in one string: the most dangerous part decides, never replica-safe;
    # a ";" inside a literal, an identifier or a comment separates nothing
    Case("SELECT ';' AS s; DROP TABLE x", PG, DDL, False, _t("x")),
    Case("SELECT 'a;b' FROM t -- ; DELETE FROM t", PG, RS, True, _t("t")),
    Case("select * from t where s = 'x'';DROP TABLE t;--'", PG, RS, True, _t("t")),
    Case("/* ; */ SELECT 1; /* DROP TABLE t; */ SELECT 2", PG, RS, False, _t()),
    Case("SELECT 1; SELECT nextval('s')", PG, WS, False, _t()),
    Case("BEGIN; ALTER TABLE t ADD COLUMN z int; COMMIT", PG, TX, False, _t("t")),
    Case("SET search_path = a; SELECT * FROM t", PG, SS, False, _t("t")),
    Case("SELECT $$;$$; UPDATE t SET a = 1", PG, WS, False, _t("t")),
    Case("SELECT * FROM a; CREATE TEMP TABLE tt (a int)", PG, SS, False, _t("a", "tt")),
    Case("SELECT `a;b` FROM t; TRUNCATE t", MY, DDL, False, _t("t")),
    Case("INSERT INTO t VALUES (1); SELECT * FROM t", MY, WS, False, _t("t")),
    Case("SELECT \"x;\" FROM t; # DROP TABLE t;\nSELECT 2", MY, RS, False, _t("t")),
    Case("SELECT * FROM t WHERE a = 'x;y'; DELETE FROM t WHERE b = 'p;q'", LITE, WS, False,
         _t("t")),
    Case("SELECT 1; -- DROP TABLE t;\nSELECT 2", LITE, RS, False, _t()),
)
# fmt: on
