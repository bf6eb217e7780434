-- Theme labels: the LLM side channel's answer to a `theme_label` job, written back by the
-- reviews pipeline's TopicLabelSink before the job is acknowledged. One row per topic id (the
-- latest label wins); the same transaction sets reviews.topic_label of the topic's rows, and a
-- review stored later takes the label at insert (the reviews upsert reads this table). Both
-- writers hold a transaction-level advisory lock on the topic (exclusive for the label, shared
-- for a review), so a review inserted while a label is written never keeps the old label.
CREATE TABLE IF NOT EXISTS topic_labels (
    topic_id    BIGINT PRIMARY KEY,
    -- The LLM's short, human-readable theme (at most six words).
    label       TEXT NOT NULL,
    -- The topic's keywords the LLM was shown, most representative first.
    keywords    TEXT[] NOT NULL DEFAULT '{}',
    labelled_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
