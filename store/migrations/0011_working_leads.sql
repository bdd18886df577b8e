-- Working leads: the people who work them, who is responsible for each lead, deals a
-- conversion creates, planned activities and the daily stale digest.

-- Teams group users; a supervisor sees the leads of everyone in their team.
CREATE TABLE teams (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The people who work leads. A user is never deleted (history names them): deactivate.
CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    -- Lower-cased: the digest is mailed here and `token create --user` finds users by it.
    email       text NOT NULL UNIQUE,
    -- An IANA zone (Europe/Rome): the digest arrives in the user's morning.
    time_zone   text NOT NULL DEFAULT 'UTC',
    active      boolean NOT NULL DEFAULT true,
    team_id     bigint REFERENCES teams(id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_team ON users (team_id) WHERE team_id IS NOT NULL;

-- API tokens: only a SHA-256 of the token is kept; the role is the token's, so one user
-- may hold an agent token for daily work and an admin token for configuration.
CREATE TABLE api_tokens (
    id            bigserial PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users(id),
    role          text NOT NULL CHECK (role IN ('agent', 'supervisor', 'admin')),
    token_hash    bytea NOT NULL UNIQUE,
    -- The first characters of the token, to tell tokens apart in listings.
    prefix        text NOT NULL,
    label         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- Who works the lead; NULL is the unassigned queue.
ALTER TABLE leads
    ADD COLUMN responsible_id bigint REFERENCES users(id),
    -- When the lead reached a success or failure stage; NULL while it is being worked.
    ADD COLUMN closed_at      timestamptz,
    -- Why a lead was finished as junk (one of the configured reasons), for reports.
    ADD COLUMN junk_reason    text;
CREATE INDEX leads_responsible ON leads (responsible_id, id);
CREATE INDEX leads_stage_entered ON leads (stage_id, stage_entered_at);

-- Lead pipelines and deal pipelines share the stage model.
ALTER TABLE pipelines
    ADD COLUMN kind text NOT NULL DEFAULT 'lead' CHECK (kind IN ('lead', 'deal'));

-- A removed stage keeps its row (history points at it) but takes no leads.
ALTER TABLE stages ADD COLUMN removed_at timestamptz;

INSERT INTO pipelines (code, name, kind) VALUES ('deals', 'Deals', 'deal');
INSERT INTO stages (pipeline_id, code, name, sort_order, color, semantic, deadline_days, is_initial)
SELECT p.id, s.code, s.name, s.sort_order, s.color, s.semantic, s.deadline_days, s.is_initial
FROM pipelines p,
     (VALUES
        ('new',         'New',         10, '#2196F3', 'open',    0, true),
        ('proposal',    'Proposal',    20, '#FFC107', 'open',    0, false),
        ('negotiation', 'Negotiation', 30, '#FF9800', 'open',    0, false),
        ('won',         'Won',         40, '#4CAF50', 'success', 0, false),
        ('lost',        'Lost',        50, '#F44336', 'failure', 0, false)
     ) AS s(code, name, sort_order, color, semantic, deadline_days, is_initial)
WHERE p.code = 'deals';

-- What a converted lead became.
CREATE TABLE deals (
    id              bigserial PRIMARY KEY,
    title           text NOT NULL,
    amount          numeric(18, 2),
    currency        text CHECK (currency ~ '^[A-Z]{3}$'),
    contact_id      bigint REFERENCES contacts(id),
    company_id      bigint REFERENCES companies(id),
    lead_id         bigint REFERENCES leads(id),
    pipeline_id     bigint NOT NULL REFERENCES pipelines(id),
    stage_id        bigint NOT NULL REFERENCES stages(id),
    responsible_id  bigint REFERENCES users(id),
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deals_lead ON deals (lead_id) WHERE lead_id IS NOT NULL;
CREATE INDEX deals_contact ON deals (contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX deals_company ON deals (company_id) WHERE company_id IS NOT NULL;

-- Planned work (calls, meetings, tasks) lives in activities with a due time.
ALTER TABLE activities
    ADD COLUMN assignee_id  bigint REFERENCES users(id),
    ADD COLUMN completed_at timestamptz,
    ADD COLUMN created_by   text;
-- "What is next on this lead" and the activity view read open planned work by due time.
CREATE INDEX activities_open_due ON activities (lead_id, due_at) WHERE NOT done AND due_at IS NOT NULL;
CREATE INDEX activities_assignee_due ON activities (assignee_id, due_at) WHERE NOT done;

-- One stale digest per user and local day, whichever replica sends it.
CREATE TABLE digest_log (
    user_id     bigint NOT NULL REFERENCES users(id),
    local_date  date NOT NULL,
    lead_count  integer NOT NULL,
    outbox_id   bigint REFERENCES outbox(id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, local_date)
);
