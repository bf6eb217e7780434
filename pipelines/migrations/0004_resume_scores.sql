-- The resume pipeline's tables (`infermesh pipeline resumes`).
-- `jobs`: the open positions resumes are ranked against (the resume portal writes them); a
-- resume.uploaded event may carry its job description instead.
CREATE TABLE IF NOT EXISTS jobs (
    job_id      TEXT PRIMARY KEY,
    title       TEXT,
    description TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per (resume, job), written with INSERT ... ON CONFLICT DO UPDATE, so a redelivered
-- resume.uploaded message rewrites its row instead of adding one.
CREATE TABLE IF NOT EXISTS resume_scores (
    resume_id      TEXT NOT NULL,
    job_id         TEXT NOT NULL,
    score          REAL NOT NULL,
    semantic       REAL NOT NULL,
    skill_coverage REAL NOT NULL,
    experience     REAL NOT NULL,
    matched_skills TEXT[] NOT NULL,
    missing_skills TEXT[] NOT NULL,
    required_years REAL,
    resume_years   REAL,
    document_type  TEXT NOT NULL,
    model          TEXT NOT NULL,
    model_version  TEXT NOT NULL,
    scored_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (resume_id, job_id)
);

CREATE INDEX IF NOT EXISTS resume_scores_job_score ON resume_scores (job_id, score DESC);
