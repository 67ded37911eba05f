"""The audit view: every pull, served or failed, who pulled what and how it was answered, in notification order."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, fields
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor

from domain.pull import Pull
from projections.base import Batch, SqliteView, View
from projections.postgres_view import PostgresView
from projections.sqlite_rows import insert_rows

MAX_LIMIT = 10_000
# `audit_times` keeps, per block of TIME_BLOCK ids, the earliest and latest `at` of its rows. A `since` query
# walks ids from the first block holding a row that recent (every row before it is older), an `until` query
# stops after the last block holding one older: exact even for pulls recorded out of time order (a backlog
# written back after an outage), and a page costs a walk of a few blocks, not a sort of every row in range.
TIME_BLOCK = 4096
# A `user_agent` filter matches a substring of the agent. The view lists its distinct agents through the
# (user_agent, id) index, one probe each, up to MOST_AGENTS of them: a substring no agent has answers at
# once, and one that a few agents have (AGENT_ARMS at most) reads each agent's rows through the index, in
# id order, merged. Otherwise (a common substring, or a view of very many agents) the page walks ids as
# before, which is quick exactly when many rows match. Before, a rare agent walked the whole log for one
# page: 2.0 s at 10M pulls on PostgreSQL (4.3 s beside a CI run).
MOST_AGENTS = 2048
AGENT_ARMS = 16
# PostgreSQL's indexes lead with hashtext() of these columns, not their text (PostgresAuditView): the text
# sorted slowly when an index was built, the leading column holding few distinct values (36 orgs, a few
# results and agents) or a long common prefix (digests' "sha256:"), so most comparisons went past the
# abbreviated keys to the whole text and then the id. A 10M-row rebuild built (org, id) in 44 s against
# 18-26 s for (hashtext(org), id), single-process (bench/results/2026-12-03-audit-index-keys.md).
HASHED_COLUMNS = frozenset({"org", "repository", "result", "client", "actor", "digest", "user_agent"})
# The one result the partial indexes leave out: most pulls have it, so a page of them is found by walking ids.
UNINDEXED_RESULT = "hit"
UNUSUAL_RESULT = f"result <> '{UNINDEXED_RESULT}'"


@dataclass(frozen=True)
class AuditRow:
    id: int          # the pull's notification id in the Pulls application: stable, and the paging key
    org: str
    repository: str
    reference: str
    digest: str
    result: str
    client: str
    actor: str       # who pulled: "anonymous", a robot or org admin (<org>+<name>), "admin"
    user_agent: str
    at: float
    status: int      # the HTTP status answered
    error_code: str  # the OCI error code of an `error` pull, else ""
    note: str        # a stale serve: the upstream problem behind it; an error: the message answered
    generation: int  # which org of that name pulled (domain.org.CacheOrg.Recreated): a deleted one's stay its own


# Named, not `*`: the rows' shape stays the same when a rebuild switches readers to a new copy.
COLUMNS = ", ".join(f.name for f in fields(AuditRow))
# The PostgreSQL types of COLUMNS, as PostgresAuditView's schema declares them: a binary COPY sends each
# value in its column's own type.
_COPY_TYPES = ["bigint", "text", "text", "text", "text", "text", "text", "text", "text", "double precision",
               "integer", "text", "text", "integer"]


class AuditView(View):
    name = "audit"
    handles = (Pull.Recorded,)
    follows = ("Pulls",)
    # Archived pulls left this view when they were archived; queries read them from the segments
    # (infra/archived_audit.py), so a rebuild must not bring their rows back.
    takes_archived = False
    gathers = (Pull.Recorded,)

    def process_page(self, c: Any, batch: Batch) -> None:
        # One multi-row insert per page rather than a statement per pull.
        self.gathered_page(c, batch)

    def gathering(self) -> list[tuple]:
        return []

    def process_event(self, c: Any, event: Any, tracking: Tracking) -> None:
        # `c` is the gathering's list of rows here: they reach the database in write_gathered.
        if isinstance(event, Pull.Recorded):
            c.append(_values(event, tracking))

    def write_gathered(self, c: Any, gathered: list[tuple]) -> None:
        if gathered:
            self.add_rows(c, gathered)
            self.note_times(c, times_by_block(gathered))

    @abstractmethod
    def add_rows(self, c: Any, rows: list[tuple]) -> None:
        """Insert audit rows, given in the tables' column order (AuditRow's)."""

    @abstractmethod
    def note_times(self, c: Any, spans: list[tuple[int, float, float]]) -> None:
        """Widen each (block, earliest at, latest at) of `audit_times` to hold the given times."""

    @abstractmethod
    def remove_rows(self, first: int, last: int) -> int:
        """Delete the rows with ids in [first, last] (their pulls were archived); returns how many."""

    def query(self, org: str | None = None, repository: str | None = None, result: str | None = None,
              since: float | None = None, until: float | None = None, after_id: int | None = None,
              limit: int = 100, client: str | None = None, user_agent: str | None = None,
              actor: str | None = None, digest: str | None = None) -> list[AuditRow]:
        """Rows in id order; `since` <= at < `until`; page on with after_id = the last row's id.

        `client` matches the address exactly, `actor` and `digest` exactly, `user_agent` any substring of it.
        """
        filters = {"org": org, "repository": repository, "result": result, "since": since, "until": until,
                   "after_id": after_id, "client": client, "actor": actor, "digest": digest}
        limit = max(1, min(int(limit), MAX_LIMIT))
        if user_agent is not None:
            agents = self.user_agents(MOST_AGENTS + 1)
            if len(agents) <= MOST_AGENTS:   # every agent the view holds: the match is decided here
                matching = [agent for agent in agents if user_agent in agent]
                if not matching:
                    return []
                if len(matching) <= AGENT_ARMS:
                    return [AuditRow(*row) for row in self.select([{**filters, "agent": agent} for agent in matching],
                                                                   limit)]
        return [AuditRow(*row) for row in self.select([{**filters, "user_agent": user_agent}], limit)]

    @abstractmethod
    def user_agents(self, most: int) -> list[str]:
        """Up to `most` of the distinct user agents the view holds, in their order."""

    @abstractmethod
    def select(self, arms: list[dict], limit: int) -> list[tuple]:
        """A page of rows (AuditRow's columns) in id order: those of every arm (audit_filters' keywords)."""


def times_by_block(rows: list[tuple]) -> list[tuple[int, float, float]]:
    """(block, earliest at, latest at) of a page's rows (AuditRow's column order: id first, at tenth)."""
    times: dict[int, list[float]] = {}
    for row in rows:
        span = times.setdefault(row[0] // TIME_BLOCK, [row[9], row[9]])
        span[0], span[1] = min(span[0], row[9]), max(span[1], row[9])
    return [(block, earliest, latest) for block, (earliest, latest) in sorted(times.items())]


def page_statement(placeholder: str, contains: str, arms: list[dict], limit: int,
                   hashed: bool = False) -> tuple[str, list]:
    """The SELECT of a page and its parameters: one arm's rows, or several arms' merged in id order (each
    arm limited and ordered on its own, so each walks its index only as far as the page needs)."""
    statements, params = [], []
    for arm in arms:
        where, arm_params = audit_filters(placeholder, contains, limit=limit, hashed=hashed, **arm)
        statements.append(f"SELECT {COLUMNS} FROM {{audit}} {where}ORDER BY id LIMIT {placeholder}")
        params += arm_params
    if len(statements) == 1:
        return statements[0], params
    merged = " UNION ALL ".join(f"SELECT * FROM ({statement}) AS arm{n}" for n, statement in enumerate(statements))
    return f"{merged} ORDER BY id LIMIT {placeholder}", [*params, limit]


# The distinct agents, each the next one up in the (user_agent, id) index: a probe per agent, not a scan.
DISTINCT_AGENTS = ("WITH RECURSIVE agents(agent, n) AS ("
                   "SELECT (SELECT user_agent FROM {audit} ORDER BY user_agent LIMIT 1), 1 "
                   "UNION ALL SELECT (SELECT user_agent FROM {audit} WHERE user_agent > agents.agent "
                   "ORDER BY user_agent LIMIT 1), n + 1 FROM agents WHERE agents.agent IS NOT NULL AND n < ?) "
                   "SELECT agent FROM agents WHERE agent IS NOT NULL")


def audit_filters(placeholder: str, contains: str, org=None, repository=None, result=None, since=None, until=None,
                  after_id=None, limit=100, client=None, user_agent=None, actor=None, digest=None,
                  agent=None, hashed: bool = False) -> tuple[str, list]:
    """The WHERE clause and parameters of a query, in either SQL dialect (`?` or `%s`).

    `hashed` (PostgreSQL): the indexes lead with hashtext() of the text columns (PostgresAuditView), so each
    text match is said as the index's expression, and the column itself decides (two texts may share a hash).
    """
    clauses, params = [], []
    # The ids of rows in the time range lie within these bounds (audit_times): pages walk ids there rather
    # than sorting every row in range (214 ms a page at 1M pulls for ?since=30d on SQLite). No such block:
    # no row, and a comparison with NULL holds for none. `at + 0`: not the `at` column, so no planner takes
    # an index on time and sorts (PostgreSQL did, its statistics of a copy not yet holding the recent rows).
    if since is not None:
        clauses.append(f"id >= (SELECT min(block) FROM {{audit_times}} WHERE latest >= {placeholder}) * {TIME_BLOCK}")
        params.append(since)
    if until is not None:
        clauses.append(f"id < (SELECT max(block) + 1 FROM {{audit_times}} WHERE earliest < {placeholder}) * {TIME_BLOCK}")
        params.append(until)
    # Any result but a hit is rare (a busy cache serves ~90% hits): those rows have their own partial
    # indexes, `(result, id)` and `(org, result, id)`, kept only for them. Saying `result <> 'hit'` in the
    # query's own words lets both planners take them (SQLite's cannot infer it from `result = ?`, nor
    # PostgreSQL's from a parameter in a generic plan); without them `?result=denied` walked the whole
    # log for one page, and `?org&result=miss&since=7d` took 81 ms at 10M pulls on PostgreSQL.
    if result is not None and result != UNINDEXED_RESULT:
        clauses.append(UNUSUAL_RESULT)
    for clause, value in (("org = ?", org), ("repository = ?", repository), ("result = ?", result),
                          ("at + 0 >= ?", since), ("at + 0 < ?", until), ("id > ?", after_id),
                          ("client = ?", client), ("actor = ?", actor), ("digest = ?", digest),
                          (contains, user_agent), ("user_agent = ?", agent)):
        if value is None:
            continue
        column = clause.split(" ", 1)[0]
        if hashed and column in HASHED_COLUMNS:
            clauses.append(f"hashtext({column}) = hashtext({placeholder}) AND {column} = {placeholder}")
            params += [value, value]
        else:
            clauses.append(clause.replace("?", placeholder))
            params.append(value)
    params.append(max(1, min(int(limit), MAX_LIMIT)))
    return (f"WHERE {' AND '.join(clauses)} " if clauses else ""), params


# The blocks of removed (archived) rows again from the rows left in them, as a rebuild would make them.
_RETIME = ("DELETE FROM {audit_times} WHERE block BETWEEN %s AND %s",
           f"INSERT INTO {{audit_times}} SELECT id / {TIME_BLOCK}, min(at), max(at) FROM {{audit}} "
           f"WHERE id >= %s * {TIME_BLOCK} AND id < (%s + 1) * {TIME_BLOCK} GROUP BY id / {TIME_BLOCK}")


def audit_row(event: Pull.Recorded, position: int) -> AuditRow:
    """The row of a pull read from elsewhere (an archive segment), as the view would hold it."""
    return AuditRow(*_values(event, Tracking("Pulls", position)))


def _values(event: Pull.Recorded, tracking: Tracking) -> tuple:
    """One audit row, in the tables' column order (AuditRow's)."""
    return (tracking.notification_id, event.org, event.repository, event.reference, event.digest, event.result,
            event.client, event.actor, event.user_agent, event.at, event.status, event.error_code, event.note,
            event.generation)


class SqliteAuditView(SqliteView, AuditView):
    tables = ("audit", "audit_times")
    schema_version = 5   # 2: status, error_code and note; 3: actor; 4: generation; 5: audit_times, no index on at
    schema = (
        "CREATE TABLE IF NOT EXISTS audit_times (block INTEGER PRIMARY KEY, earliest REAL NOT NULL, latest REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, org TEXT NOT NULL, repository TEXT NOT NULL, "
        "reference TEXT NOT NULL, digest TEXT NOT NULL, result TEXT NOT NULL, client TEXT NOT NULL, actor TEXT NOT NULL, "
        "user_agent TEXT NOT NULL, at REAL NOT NULL, status INTEGER NOT NULL, error_code TEXT NOT NULL, "
        "note TEXT NOT NULL, generation INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS audit_org ON audit (org, repository, id)",
        # An org's pages walk this in id order; with (org, repository, id) alone, every page of
        # `?org=` sorted all of the org's rows (seconds at millions). IF NOT EXISTS: an existing view
        # gets it when next opened, without a rebuild.
        "CREATE INDEX IF NOT EXISTS audit_org_id ON audit (org, id)",
        # ?repository= without an org: the same walk (177 ms a page at 1M pulls without it).
        "CREATE INDEX IF NOT EXISTS audit_repository_id ON audit (repository, id)",
        # The pulls of one digest (`history digest`). An index needs no replay, so no new schema_version:
        # CREATE INDEX IF NOT EXISTS runs at every open and builds it once on an older file.
        "CREATE INDEX IF NOT EXISTS audit_digest ON audit (digest, id)",
        # ?client= and ?actor= (an incident's "what did this node / robot pull"): without them a client or
        # actor that pulled little or nothing walked the whole log for one page (~0.7 s at 5M pulls).
        "CREATE INDEX IF NOT EXISTS audit_client_id ON audit (client, id)",
        "CREATE INDEX IF NOT EXISTS audit_actor_id ON audit (actor, id)",
        # ?result= and ?org=&result= for anything but a hit (see audit_filters): a result few pulls have
        # (denied, error) walked the whole log for one page. Partial: a hit, most pulls, writes neither.
        f"CREATE INDEX IF NOT EXISTS audit_result_id ON audit (result, id) WHERE {UNUSUAL_RESULT}",
        f"CREATE INDEX IF NOT EXISTS audit_org_result_id ON audit (org, result, id) WHERE {UNUSUAL_RESULT}",
        # ?user_agent= (see MOST_AGENTS): the distinct agents, and the rows of each in id order.
        "CREATE INDEX IF NOT EXISTS audit_user_agent_id ON audit (user_agent, id)",
    )

    def add_rows(self, c: SQLiteCursor, rows: list[tuple]) -> None:
        insert_rows(c, "INSERT INTO audit VALUES", rows, 14)

    def note_times(self, c: SQLiteCursor, spans: list[tuple[int, float, float]]) -> None:
        c.executemany("INSERT INTO audit_times VALUES (?, ?, ?) ON CONFLICT (block) DO UPDATE SET "
                      "earliest = min(earliest, excluded.earliest), latest = max(latest, excluded.latest)", spans)

    def remove_rows(self, first: int, last: int) -> int:
        with self._writing() as c:
            c.execute("DELETE FROM audit WHERE id BETWEEN ? AND ?", (first, last))
            removed = c.sqlite_cursor.rowcount
            for statement in _RETIME:
                c.execute(statement.format(audit="audit", audit_times="audit_times").replace("%s", "?"),
                          (first // TIME_BLOCK, last // TIME_BLOCK))
            return removed

    def user_agents(self, most: int) -> list[str]:
        return [row[0] for row in self._query(DISTINCT_AGENTS.format(audit="audit"), (most,))]

    def select(self, arms: list[dict], limit: int) -> list[tuple]:
        statement, params = page_statement("?", "instr(user_agent, ?) > 0", arms, limit)
        return self._query(statement.format(audit="audit", audit_times="audit_times"), params)


class PostgresAuditView(PostgresView, AuditView):
    projection = "audit"
    tables = ("audit", "audit_times", "audit_agents")
    # 2: status, error_code and note; 3: actor; 4: generation; 5: audit_times, no index on at; 6: the indexes
    # keyed by hashtext() of the text columns (HASHED_COLUMNS), the distinct agents in audit_agents; 7: each
    # hashed column's statistics with its hash
    schema_version = 7
    indexes = ("audit_org", "audit_org_id", "audit_repository_id", "audit_digest", "audit_client_id", "audit_actor_id",
               "audit_result_id", "audit_org_result_id", "audit_user_agent_id")
    statistics = tuple(f"audit_{column}_hashed" for column in sorted(HASHED_COLUMNS))
    schema = (
        # The indexed text columns compare as bytes ("C"), as SQLite's do: the queries only match them, and the
        # database's own collation (C.UTF-8 here, en_US.UTF-8 often) compares through strcoll. A copy made
        # before keeps its collation until it is rebuilt: the same rows, the same answers.
        "CREATE TABLE IF NOT EXISTS {audit} (id bigint PRIMARY KEY, org text COLLATE \"C\" NOT NULL, "
        "repository text COLLATE \"C\" NOT NULL, reference text NOT NULL, digest text COLLATE \"C\" NOT NULL, "
        "result text COLLATE \"C\" NOT NULL, client text COLLATE \"C\" NOT NULL, actor text COLLATE \"C\" NOT NULL, "
        "user_agent text COLLATE \"C\" NOT NULL, at double precision NOT NULL, status integer NOT NULL, "
        "error_code text NOT NULL, note text NOT NULL, generation integer NOT NULL)",
        "CREATE TABLE IF NOT EXISTS {audit_times} (block bigint PRIMARY KEY, earliest double precision NOT NULL, "
        "latest double precision NOT NULL)",
        # The distinct user agents (?user_agent=, see MOST_AGENTS): the agents' index holds their hashes, in no
        # useful order, so it cannot list them as SQLite's (user_agent, id) does. Kept as pages are written,
        # and as rows are archived (remove_rows).
        "CREATE TABLE IF NOT EXISTS {audit_agents} (agent text COLLATE \"C\" PRIMARY KEY)",
        # As SqliteAuditView's, each text key as hashtext(column) (HASHED_COLUMNS, audit_filters(hashed=True)).
        "CREATE INDEX IF NOT EXISTS {audit_org} ON {audit} (hashtext(org), hashtext(repository), id)",
        "CREATE INDEX IF NOT EXISTS {audit_org_id} ON {audit} (hashtext(org), id)",
        "CREATE INDEX IF NOT EXISTS {audit_repository_id} ON {audit} (hashtext(repository), id)",
        "CREATE INDEX IF NOT EXISTS {audit_digest} ON {audit} (hashtext(digest), id)",
        "CREATE INDEX IF NOT EXISTS {audit_client_id} ON {audit} (hashtext(client), id)",
        "CREATE INDEX IF NOT EXISTS {audit_actor_id} ON {audit} (hashtext(actor), id)",
        f"CREATE INDEX IF NOT EXISTS {{audit_result_id}} ON {{audit}} (hashtext(result), id) WHERE {UNUSUAL_RESULT}",
        f"CREATE INDEX IF NOT EXISTS {{audit_org_result_id}} ON {{audit}} (hashtext(org), hashtext(result), id) "
        f"WHERE {UNUSUAL_RESULT}",
        "CREATE INDEX IF NOT EXISTS {audit_user_agent_id} ON {audit} (hashtext(user_agent), id)",
        # A query says `hashtext(org) = hashtext($1) AND org = $1`; the planner multiplies the two clauses'
        # selectivities as if they were independent, so a less popular org seemed to have a handful of rows
        # and its page walked the primary key (or, on a small table, sorted all its rows) instead of walking
        # (hashtext(org), id) in id order: 2.35 -> 46.8 ms at 10M pulls (bench/results/2026-12-03-audit-index-keys.md,
        # -audit-keys-stats-s24.md). Each column's dependency on its hash (and the hash's own statistics, even
        # while a rebuild has dropped the indexes) is measured by ANALYZE.
        *(f"CREATE STATISTICS IF NOT EXISTS {{audit_{column}_hashed}} (dependencies) ON {column}, hashtext({column}) "
          "FROM {audit}" for column in sorted(HASHED_COLUMNS)),
    )

    def add_rows(self, c: Cursor, rows: list[tuple]) -> None:
        # COPY: the fastest way into PostgreSQL, in the page's transaction like any statement. Binary: psycopg
        # formats each row in C and the server parses no text (the text format's write_row was ~8 % of a
        # rebuild's audit-and-chain process, py-spy).
        with c.copy(self.sql(f"COPY {{audit}} ({COLUMNS}) FROM STDIN (FORMAT BINARY)")) as copy:
            copy.set_types(_COPY_TYPES)
            write = copy.write_row
            for row in rows:
                write(row)

    def write_gathered(self, c: Cursor, gathered: list[tuple]) -> None:
        super().write_gathered(c, gathered)
        if gathered:
            c.execute(self.sql("INSERT INTO {audit_agents} SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING"),
                      (sorted({row[8] for row in gathered}),), prepare=True)

    def note_times(self, c: Cursor, spans: list[tuple[int, float, float]]) -> None:
        blocks, earliest, latest = zip(*spans)
        c.execute(self.sql("INSERT INTO {audit_times} AS t SELECT * FROM unnest(%s::bigint[], %s::double precision[], "
                           "%s::double precision[]) ON CONFLICT (block) DO UPDATE SET "
                           "earliest = LEAST(t.earliest, excluded.earliest), latest = GREATEST(t.latest, excluded.latest)"),
                  (list(blocks), list(earliest), list(latest)), prepare=True)

    def remove_rows(self, first: int, last: int) -> int:
        with self.datastore.transaction(commit=True) as c:
            c.execute(self.sql("DELETE FROM {audit} WHERE id BETWEEN %s AND %s"), (first, last))
            removed = c.rowcount
            for statement in _RETIME:
                c.execute(self.sql(statement), (first // TIME_BLOCK, last // TIME_BLOCK))
            # Agents none of the rows left have, as a rebuild would list them: a probe of the index per agent.
            c.execute(self.sql("DELETE FROM {audit_agents} AS a WHERE NOT EXISTS (SELECT FROM {audit} "
                               "WHERE hashtext(user_agent) = hashtext(a.agent) AND user_agent = a.agent)"))
            return removed

    def user_agents(self, most: int) -> list[str]:
        return [row[0] for row in self._query("SELECT agent FROM {audit_agents} ORDER BY agent LIMIT %s", (most,))]

    def select(self, arms: list[dict], limit: int) -> list[tuple]:
        return self._query(*page_statement("%s", "strpos(user_agent, %s) > 0", arms, limit, hashed=True))
