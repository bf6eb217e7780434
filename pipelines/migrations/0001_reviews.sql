-- The reviews pipeline's table (`infermesh pipeline reviews`): one row per review_id, written
-- with INSERT ... ON CONFLICT (review_id) DO UPDATE, so a redelivered reviews.submitted message
-- rewrites its row instead of adding one. Sentiment and topic columns are NULL when the
-- inference server refused that part for this text (the rest of the row is still stored).
CREATE TABLE IF NOT EXISTS reviews (
    review_id        TEXT PRIMARY KEY,
    product_id       TEXT NOT NULL,
    text             TEXT NOT NULL,
    rating           SMALLINT CHECK (rating BETWEEN 1 AND 5),
    sentiment_label  TEXT,
    sentiment_score  REAL,
    -- Which model answered: "llm" or "classifier" (infermesh.v1.SentimentResult.source).
    sentiment_source TEXT,
    -- -1 for an outlier (no topic).
    topic_id         BIGINT,
    topic_label      TEXT,
    -- When the review was submitted (the event's ts).
    created_at       TIMESTAMPTZ NOT NULL,
    -- When the pipeline last wrote the row.
    processed_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS reviews_product_created ON reviews (product_id, created_at);
CREATE INDEX IF NOT EXISTS reviews_topic ON reviews (topic_id);
