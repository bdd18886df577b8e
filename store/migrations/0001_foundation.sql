-- Pipelines and their stages. A stage's semantic says what it means for the lead:
-- open and frozen stages are "in progress", success/failure/abandoned are final.
CREATE TABLE pipelines (
    id          bigserial PRIMARY KEY,
    code        text NOT NULL UNIQUE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stages (
    id            bigserial PRIMARY KEY,
    pipeline_id   bigint NOT NULL REFERENCES pipelines(id),
    code          text NOT NULL,
    name          text NOT NULL,
    sort_order    integer NOT NULL,
    color         text NOT NULL,
    semantic      text NOT NULL CHECK (semantic IN ('open', 'frozen', 'success', 'failure', 'abandoned')),
    deadline_days integer NOT NULL DEFAULT 0 CHECK (deadline_days >= 0),
    is_initial    boolean NOT NULL DEFAULT false,
    active        boolean NOT NULL DEFAULT true,
    UNIQUE (pipeline_id, code)
);
-- Exactly one initial stage per pipeline.
CREATE UNIQUE INDEX stages_one_initial ON stages (pipeline_id) WHERE is_initial;

INSERT INTO pipelines (code, name) VALUES ('default', 'Sales leads');
INSERT INTO stages (pipeline_id, code, name, sort_order, color, semantic, deadline_days, is_initial)
SELECT p.id, s.code, s.name, s.sort_order, s.color, s.semantic, s.deadline_days, s.is_initial
FROM pipelines p,
     (VALUES
        ('not_engaged',        'Not engaged',        10, '#9E9E9E', 'frozen',    0, false),
        ('open',               'Open',               20, '#2196F3', 'open',      1, true),
        ('attempting_contact', 'Attempting contact', 30, '#FF9800', 'open',      3, false),
        ('working',            'Working',            40, '#FFC107', 'open',      7, false),
        ('qualified',          'Qualified',          50, '#4CAF50', 'success',   0, false),
        ('junk',               'Junk',               60, '#F44336', 'failure',   0, false),
        ('ignored',            'Ignored',            70, '#795548', 'abandoned', 0, false)
     ) AS s(code, name, sort_order, color, semantic, deadline_days, is_initial)
WHERE p.code = 'default';

-- Every inquiry that reached a consumer, whatever became of it. The primary key is the
-- deterministic inquiry id: a redelivery or replay hits it and changes nothing.
CREATE TABLE inquiries (
    id               uuid PRIMARY KEY,
    channel          text NOT NULL,
    source           text NOT NULL,
    external_id      text,
    received_at      timestamptz NOT NULL,
    stored_at        timestamptz NOT NULL DEFAULT now(),
    -- lead: filed as a new lead; duplicate: same content inside the window; spam.
    disposition      text NOT NULL CHECK (disposition IN ('lead', 'duplicate', 'spam')),
    duplicate_of     uuid REFERENCES inquiries(id),
    spam_reason      text,
    dedup_key        text,
    payload          jsonb NOT NULL,
    raw_content_type text,
    raw_body         bytea NOT NULL
);
CREATE INDEX inquiries_dedup ON inquiries (source, dedup_key, received_at) WHERE dedup_key IS NOT NULL;
CREATE INDEX inquiries_received ON inquiries (received_at);

CREATE TABLE leads (
    id               bigserial PRIMARY KEY,
    inquiry_id       uuid NOT NULL UNIQUE REFERENCES inquiries(id),
    title            text NOT NULL,
    name             text,
    email            text,
    phone            text,
    phone_extension  text,
    company          text,
    message          text,
    channel          text NOT NULL,
    source           text NOT NULL,
    utm              jsonb NOT NULL DEFAULT '{}',
    fields           jsonb NOT NULL DEFAULT '{}',
    problems         jsonb NOT NULL DEFAULT '[]',
    pipeline_id      bigint NOT NULL REFERENCES pipelines(id),
    stage_id         bigint NOT NULL REFERENCES stages(id),
    stage_entered_at timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX leads_email ON leads (email) WHERE email IS NOT NULL;
CREATE INDEX leads_phone ON leads (phone) WHERE phone IS NOT NULL;
CREATE INDEX leads_stage ON leads (stage_id, id);
CREATE INDEX leads_source ON leads (source, id);
CREATE INDEX leads_channel ON leads (channel, id);
CREATE INDEX leads_created ON leads (created_at, id);

-- Every stage change, including the entry into the first stage.
CREATE TABLE lead_stage_history (
    id            bigserial PRIMARY KEY,
    lead_id       bigint NOT NULL REFERENCES leads(id),
    from_stage_id bigint REFERENCES stages(id),
    to_stage_id   bigint NOT NULL REFERENCES stages(id),
    changed_at    timestamptz NOT NULL DEFAULT now(),
    changed_by    text NOT NULL,
    reason        text
);
CREATE INDEX lead_stage_history_lead ON lead_stage_history (lead_id, changed_at);

-- The communication history (each inquiry, email, chat message, call) and planned work.
CREATE TABLE activities (
    id          bigserial PRIMARY KEY,
    lead_id     bigint NOT NULL REFERENCES leads(id),
    kind        text NOT NULL,
    channel     text,
    inquiry_id  uuid REFERENCES inquiries(id),
    subject     text,
    body        text,
    occurred_at timestamptz NOT NULL,
    due_at      timestamptz,
    done        boolean NOT NULL DEFAULT true,
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX activities_lead ON activities (lead_id, occurred_at);

-- Which body each Idempotency-Key was first used with, per form.
CREATE TABLE intake_keys (
    scope       text NOT NULL,
    key         text NOT NULL,
    body_hash   bytea NOT NULL,
    inquiry_id  uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
