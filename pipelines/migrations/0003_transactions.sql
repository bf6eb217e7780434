-- The product database's transactions (ARCHITECTURE.md, finance.transactions), which
-- `infermesh cdc postgres --table transactions` streams into finance.transactions as Debezium
-- change events. Declarative range partitions by month of created_at; the primary key holds
-- the partition key, as PostgreSQL requires of a partitioned table; the index on
-- (user_id, created_at) serves "this user's recent transactions" on every partition.
CREATE TABLE IF NOT EXISTS transactions (
    transaction_id TEXT           NOT NULL,
    user_id        TEXT           NOT NULL,
    device_id      TEXT,
    amount         NUMERIC(14, 2) NOT NULL,
    currency       CHAR(3)        NOT NULL DEFAULT 'USD',
    merchant       TEXT,
    category       TEXT,
    created_at     TIMESTAMPTZ    NOT NULL DEFAULT now(),
    PRIMARY KEY (transaction_id, created_at)
) PARTITION BY RANGE (created_at);

CREATE INDEX IF NOT EXISTS transactions_user_created ON transactions (user_id, created_at);

-- Rows of a month with no partition yet land here, so an insert is never refused.
CREATE TABLE IF NOT EXISTS transactions_default PARTITION OF transactions DEFAULT;

-- Creates the monthly partitions transactions_yYYYYmMM of `months` months from the month of
-- `from_month` that do not exist yet; returns how many it created. A month whose rows already
-- sit in the default partition is left there (PostgreSQL refuses to carve it out) and skipped.
-- `infermesh cdc postgres` calls it at start-up for the current month and the next ones.
CREATE OR REPLACE FUNCTION infermesh_transactions_partitions(from_month DATE, months INTEGER)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE
    m       DATE := date_trunc('month', from_month)::DATE;
    created INTEGER := 0;
    part    TEXT;
BEGIN
    FOR i IN 1..GREATEST(months, 0) LOOP
        part := format('transactions_y%sm%s', to_char(m, 'YYYY'), to_char(m, 'MM'));
        IF to_regclass(part) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF transactions FOR VALUES FROM (%L) TO (%L)',
                    part, m::TIMESTAMPTZ, (m + INTERVAL '1 month')::TIMESTAMPTZ);
                created := created + 1;
            EXCEPTION WHEN check_violation THEN
                NULL;
            END;
        END IF;
        m := (m + INTERVAL '1 month')::DATE;
    END LOOP;
    RETURN created;
END
$$;

SELECT infermesh_transactions_partitions((now() - INTERVAL '1 month')::DATE, 4);
