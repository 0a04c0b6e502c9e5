"""The unit of work on MongoDB: state documents and their events in one transaction, or nothing."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import bson
from pymongo import AsyncMongoClient, DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ClientBulkWriteException,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.write_concern import WriteConcern

from command_api.adapters import mongo_documents as docs
from command_api.adapters.group_commit import GroupCommit, Pause
from command_api.adapters.mongo_schema import (
    CAMPAIGNS,
    EVENTS,
    IDEMPOTENCY_KEYS,
    REFRESH_TOKENS,
    TIMER,
    USERS,
    Document,
    IndexGate,
)
from command_api.application.errors import (
    ConcurrencyConflict,
    EmailTaken,
    IdempotencyKeyTaken,
)
from command_api.application.ports import IdempotentOutcome
from command_api.domain.aggregate import Aggregate, DomainEvent
from command_api.domain.campaign import Campaign, timer_id
from command_api.domain.refresh_token import RefreshToken
from command_api.domain.user import User
from events import EventEnvelope, new_envelope, to_log_document
from events.envelope import utc_now
from events.types import CampaignActivated, CampaignCompleted, CampaignUpdated
from service_runtime.logs import correlation_id

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSACTION_ATTEMPTS = 5
COMMIT_ATTEMPTS = 3
RETRY_BACKOFF_SECONDS = 0.02

DUPLICATE_KEY = 11000
# Inserts into one collection from this many on go as one `insert` statement (`_grouped_inserts`).
INSERT_MANY_FROM = 4
# Ids in one `$in` list at most: the local SecantusDB matches each document against the whole
# list, so a statement's cost grows with the square of its list (200 ids cost 50 ms, four
# statements of 50 ids 28 ms, 500 ids 260 ms); longer lists go as several statements.
IN_CHUNK = 50
# Set explicitly: an acknowledged command survives a failover (a 2xx means durable).
MAJORITY = WriteConcern("majority")


@dataclass(frozen=True)
class Write:
    """One staged write, and what its failure means to the command.

    `duplicate` turns a duplicate-key error (its details) into the command's error;
    `conflict`, for a compare-and-set, is the conflict to raise when fewer than `matches`
    documents matched (one, or every campaign of a grouped update).
    """

    model: InsertOne[Document] | UpdateOne | UpdateMany | ReplaceOne[Document] | DeleteOne | DeleteMany
    duplicate: Callable[[Document], Exception] | None = None
    conflict: str | None = None
    matches: int = 1
    # An insert's collection and document (`inserting`): many into one collection go as one
    # `insert` statement.
    collection: str | None = None
    document: Document | None = None


def chunked(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` in consecutive slices of at most `size` (none for no items)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def inserting(
    db: AsyncDatabase[Document],
    collection: str,
    document: Document,
    duplicate: Callable[[Document], Exception] | None = None,
) -> Write:
    model = InsertOne(document, namespace=f"{db.name}.{collection}")
    return Write(model, duplicate=duplicate, collection=collection, document=document)


def _grouped_inserts(writes: list[Write]) -> tuple[list[Write], dict[str, list[Write]]]:
    """The writes for the bulkWrite, and the inserts that go as one `insert` statement per
    collection instead: those of a collection that gets at least `INSERT_MANY_FROM` (a batch of
    firings). On the local SecantusDB an insert inside a bulkWrite costs a statement of its own,
    about 3 ms, where one `insert` of 200 documents costs a few; a command's one or two inserts
    stay in its bulkWrite (one round trip). They run after the bulkWrite, in the same transaction."""
    counts: dict[str, int] = {}
    for write in writes:
        if write.collection is not None:
            counts[write.collection] = counts.get(write.collection, 0) + 1
    bulk: list[Write] = []
    grouped: dict[str, list[Write]] = {}
    for write in writes:
        if write.collection is not None and counts[write.collection] >= INSERT_MANY_FROM:
            grouped.setdefault(write.collection, []).append(write)
        else:
            bulk.append(write)
    return bulk, grouped


class ReadAhead:
    """Campaign documents read ahead of the command that loads them (the scheduler reads its due
    timers with their whole campaigns): `get_many` takes them from here rather than read them
    again, which spared the local SecantusDB a read of every campaign a burst fires. One may be
    stale by then; the write's version check decides, as for any document read before a write
    (a grouped firing that finds a campaign moved is decided once more on fresh reads: what is
    taken is no longer kept). At most `limit` are kept, the oldest let go first; each is taken once."""

    def __init__(self, limit: int) -> None:
        self._documents: OrderedDict[str, Document] = OrderedDict()
        self._limit = limit

    def keep(self, documents: Iterable[Document]) -> None:
        for document in documents:
            self._documents[document["_id"]] = document
            self._documents.move_to_end(document["_id"])
        while len(self._documents) > self._limit:
            self._documents.popitem(last=False)

    def take(self, ids: Iterable[str]) -> tuple[list[Document], list[str]]:
        """The documents kept for `ids` (no longer kept), and the ids without one."""
        found: list[Document] = []
        missing: list[str] = []
        for campaign_id in ids:
            document = self._documents.pop(campaign_id, None)
            if document is None:
                missing.append(campaign_id)
            else:
                found.append(document)
        return found, missing


_REFUSED_WRITE = "_refused_write"


def refusal(error: Exception, write: Write) -> Exception:
    """`error`, the command's answer to `write` refused (a duplicate key, a version moved),
    marked with that write: a group commit knows whose command it was (`refused_write`)."""
    setattr(error, _REFUSED_WRITE, write)
    return error


def refused_write(error: BaseException) -> Write | None:
    """The write a transaction's error was the refusal of, if it was one (`refusal`)."""
    write = getattr(error, _REFUSED_WRITE, None)
    return write if isinstance(write, Write) else None


class WriteTransactions:
    """Staged writes run in one transaction: one bulkWrite (one round trip, one transaction
    statement), then the commit; a transient error retries the whole transaction. Each round trip
    costs a single-threaded local SecantusDB about as much as the write itself."""

    def __init__(self, client: AsyncMongoClient[Document], db: AsyncDatabase[Document]) -> None:
        self._client = client
        self._db = db

    async def run(self, writes: list[Write], pause: Pause = asyncio.sleep) -> None:
        """The writes committed, or the error that stopped them; `pause` waits between two
        attempts (a group commit gives up the transaction's place meanwhile)."""
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            async with self._client.start_session() as session:
                try:
                    await session.start_transaction(write_concern=MAJORITY)
                    await self._write(writes, session)
                    await _commit(session)
                    return
                except PyMongoError as exc:
                    await _abort(session)
                    if not _retryable(exc) or attempt == TRANSACTION_ATTEMPTS:
                        raise
                    log.info("transient transaction error, retrying (attempt %d): %s", attempt, exc)
                except BaseException:
                    await _abort(session)
                    raise
            await pause(RETRY_BACKOFF_SECONDS * attempt)

    async def _write(self, writes: list[Write], session: AsyncClientSession) -> None:
        bulk, grouped = _grouped_inserts(writes)
        if bulk:
            await self._bulk_write(bulk, session)
        for collection, inserts in grouped.items():
            await self._insert_many(collection, inserts, session)

    async def _insert_many(self, collection: str, inserts: list[Write], session: AsyncClientSession) -> None:
        documents = [write.document for write in inserts if write.document is not None]
        try:
            await self._db[collection].insert_many(documents, ordered=True, session=session)
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors") or []:
                write = inserts[error["index"]]
                if error.get("code") == DUPLICATE_KEY and write.duplicate is not None:
                    raise refusal(write.duplicate(error), write) from exc
            raise

    async def _bulk_write(self, writes: list[Write], session: AsyncClientSession) -> None:
        compare_and_set = any(write.conflict is not None for write in writes)
        try:
            result = await self._client.bulk_write(
                [write.model for write in writes],
                session=session,
                ordered=True,
                verbose_results=compare_and_set,
            )
        except ClientBulkWriteException as exc:
            # The write errors are the server's documents (pymongo's annotation says otherwise).
            errors: list[Document] = (exc.details or {}).get("writeErrors") or []
            for error in errors:
                write = writes[error["idx"]]
                if error.get("code") == DUPLICATE_KEY and write.duplicate is not None:
                    raise refusal(write.duplicate(error), write) from exc
            if isinstance(exc.error, PyMongoError):
                # The server's or the network's own error, with its labels (TransientTransactionError)
                # that the wrapper does not carry.
                raise exc.error from None
            raise
        if compare_and_set:
            updated = result.update_results
            for index, write in enumerate(writes):
                if write.conflict is not None and (
                    index not in updated or updated[index].matched_count != write.matches
                ):
                    raise refusal(ConcurrencyConflict(write.conflict), write)


class MongoUnitOfWork:
    """One command's staged writes; `commit` runs them and appends the events in one transaction
    (`WriteTransactions`), which commands queued at the same time may share (`GroupCommit`)."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        db: AsyncDatabase[Document],
        gate: IndexGate,
        transactions: GroupCommit[Write] | None = None,
        read_ahead: ReadAhead | None = None,
    ) -> None:
        self._db = db
        self._gate = gate
        # Shared by the process's units of work: at most so many transactions in flight
        # (`mongo_transactions_in_flight`), the commands queued meanwhile committed together
        # (group_commit.py); None: each commit runs its own transaction at once.
        self._transact = (
            transactions.commit if transactions is not None else WriteTransactions(client, db).run
        )
        self._writes: list[Write] = []
        self._aggregates: list[Aggregate] = []
        self.users = MongoUserRepository(self)
        self.campaigns = MongoCampaignRepository(self, read_ahead)
        self.refresh_tokens = MongoRefreshTokenRepository(self)
        self.idempotency = MongoIdempotencyRepository(self)

    async def __aenter__(self) -> Self:
        self._discard()
        await self._gate.ensure()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._discard()

    def stage(self, write: Write, aggregate: Aggregate | None = None) -> None:
        self._writes.append(write)
        if aggregate is not None:
            self._aggregates.append(aggregate)

    def track(self, aggregate: Aggregate) -> None:
        """An aggregate whose write another staged write carries (a grouped update): its events
        are appended at commit."""
        self._aggregates.append(aggregate)

    async def commit(self, *, actor_id: str | None, causation_id: str | None = None) -> None:
        # Envelopes are built once, so a retried transaction inserts the very same event ids.
        envelopes = [
            _envelope(event, actor_id, causation_id)
            for aggregate in self._aggregates
            for event in aggregate.pending_events
        ]
        recorded_at = utc_now()
        writes = [*self._writes, *(self._event_insert(e, recorded_at) for e in envelopes)]
        await self._transact(writes)
        for aggregate in self._aggregates:
            aggregate.collect_events()
        self._discard()

    def _discard(self) -> None:
        self._writes = []
        self._aggregates = []

    def namespace(self, collection: str) -> str:
        return f"{self._db.name}.{collection}"

    def _event_insert(self, envelope: EventEnvelope, recorded_at: datetime) -> Write:
        document = to_log_document(envelope)
        document["recorded_at"] = recorded_at
        # Another command already wrote this aggregate's next version.
        taken = ConcurrencyConflict(
            f"{envelope.aggregate_type} {envelope.aggregate_id} already has version "
            f"{envelope.aggregate_version}"
        )
        return inserting(self._db, EVENTS, document, duplicate=lambda _: taken)

    # Reads are not part of the transaction: the compare-and-set on `version` guards the write.
    @property
    def db(self) -> AsyncDatabase[Document]:
        return self._db


def _retryable(exc: PyMongoError) -> bool:
    # An unreachable server already cost a full server-selection timeout: answer now instead.
    return exc.has_error_label("TransientTransactionError") and not isinstance(
        exc, ServerSelectionTimeoutError
    )


async def _commit(session: AsyncClientSession) -> None:
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            await session.commit_transaction()
            return
        except PyMongoError as exc:
            # Committing again is safe: the server recognises the same transaction.
            if not exc.has_error_label("UnknownTransactionCommitResult") or attempt == COMMIT_ATTEMPTS:
                raise


async def _abort(session: AsyncClientSession) -> None:
    if session.in_transaction:
        with suppress(PyMongoError):
            await asyncio.shield(session.abort_transaction())


# Payloads whose optional fields are present only when set (an update's changed fields; the
# timer of a scheduled firing).
_SPARSE_PAYLOADS = (CampaignUpdated, CampaignActivated, CampaignCompleted)


def _envelope(event: DomainEvent, actor_id: str | None, causation_id: str | None = None) -> EventEnvelope:
    payload = event.payload.model_dump(mode="json")
    envelope = new_envelope(
        event_type=event.event_type,
        aggregate_id=event.aggregate_id,
        aggregate_version=event.aggregate_version,
        payload=payload,
        correlation_id=correlation_id.get() or f"cmd-{uuid.uuid4().hex}",
        causation_id=event.causation_id or causation_id,
        actor_id=actor_id,
        occurred_at=event.occurred_at,
    )
    if isinstance(event.payload, _SPARSE_PAYLOADS):
        # The contract: an update carries the fields that changed, and no others.
        changed = event.payload.model_fields_set
        envelope = envelope.model_copy(update={"payload": {k: envelope.payload[k] for k in sorted(changed)}})
    return envelope


def _cas_filter(aggregate: Aggregate) -> dict[str, Any]:
    return {"_id": aggregate.id, "version": aggregate.stored_version}


class MongoUserRepository:
    def __init__(self, uow: MongoUnitOfWork) -> None:
        self._uow = uow

    async def get(self, user_id: str) -> User | None:
        doc = await self._uow.db[USERS].find_one({"_id": user_id})
        return docs.user_from_document(doc) if doc else None

    async def get_by_email(self, email: str) -> User | None:
        doc = await self._uow.db[USERS].find_one({"email": email})
        return docs.user_from_document(doc) if doc else None

    def add(self, user: User) -> None:
        def taken(details: Document) -> Exception:
            if "email" in details.get("keyPattern", {"email": 1}):
                return EmailTaken(f"{user.email} is already registered")
            return ConcurrencyConflict(f"user {user.id} exists")

        model = InsertOne(docs.user_document(user), namespace=self._uow.namespace(USERS))
        self._uow.stage(Write(model, duplicate=taken), user)

    def save(self, user: User) -> None:
        self._uow.stage(_compare_and_set(self._uow, USERS, user, docs.user_document(user)), user)


class MongoCampaignRepository:
    def __init__(self, uow: MongoUnitOfWork, read_ahead: ReadAhead | None = None) -> None:
        self._uow = uow
        self._read_ahead = read_ahead
        # The documents as this unit of work read them: `save_many` writes only what changed.
        self._loaded: dict[str, Document] = {}

    async def get(self, campaign_id: str) -> Campaign | None:
        doc = await self._uow.db[CAMPAIGNS].find_one({"_id": campaign_id})
        if doc is None:
            return None
        self._loaded[campaign_id] = doc
        return docs.campaign_from_document(doc)

    async def get_many(self, campaign_ids: list[str]) -> dict[str, Campaign]:
        found: list[Document] = []
        if self._read_ahead is not None:
            found, campaign_ids = self._read_ahead.take(campaign_ids)
        for ids in chunked(campaign_ids, IN_CHUNK):
            found.extend(await self._uow.db[CAMPAIGNS].find({"_id": {"$in": list(ids)}}).to_list())
        self._loaded.update((doc["_id"], doc) for doc in found)
        return {doc["_id"]: docs.campaign_from_document(doc) for doc in found}

    async def count_live(self, owner_id: str, limit: int) -> int:
        return await self._uow.db[CAMPAIGNS].count_documents(
            {"owner_id": owner_id, "status": {"$nin": ["deleted", "completed"]}}, limit=limit
        )

    def add(self, campaign: Campaign) -> None:
        exists = ConcurrencyConflict(f"campaign {campaign.id} exists")
        timer = campaign.due_timer() if campaign.moves_timer() else None
        model = InsertOne(docs.campaign_document(campaign, timer), namespace=self._uow.namespace(CAMPAIGNS))
        self._uow.stage(Write(model, duplicate=lambda _: exists), campaign)

    def save(self, campaign: Campaign) -> None:
        self._uow.stage(self._saving(campaign, docs.campaign_document(campaign)), campaign)

    def save_many(self, campaigns: Sequence[Campaign]) -> None:
        """Several changed campaigns in as few statements as they allow (a burst of firings).

        Campaigns whose documents changed alike since this unit of work read them (the same
        status, time and next version, from the same version: what firing timers due together
        does) are saved by one update of them all, guarded by their ids and that version; it must
        match every one of them, or the commit is a `ConcurrencyConflict` like a single lost
        version check. Their next timers go in the same update: each is the same expression of
        its own document (the transition's time field, never before the firing), which the
        update computes per campaign. Every statement costs the local SecantusDB about as much as
        its write, so a batch of firings sends one update per `IN_CHUNK` campaigns and one insert
        of the events (and the commit), whatever its size."""
        groups: dict[tuple[int, bytes, _TimerShape], tuple[Document, _TimerShape, list[Campaign]]] = {}
        for campaign in campaigns:
            if not campaign.pending_events:
                continue
            loaded = self._loaded.get(campaign.id)
            document = docs.campaign_document(campaign)
            shape = _timer_shape(campaign, document)
            if loaded is None or loaded.get("version") != campaign.stored_version or shape is _ALONE:
                self._uow.stage(self._saving(campaign, document), campaign)
                continue
            changed = {k: v for k, v in document.items() if k != "_id" and loaded.get(k) != v}
            key = (campaign.stored_version, bson.encode(changed), shape)
            groups.setdefault(key, (changed, shape, []))[2].append(campaign)
        for (version, _, _), (changed, shape, members) in groups.items():
            update = _grouped_update(changed, shape, members[0].version)
            # `IN_CHUNK` campaigns an update: each must match all of its own.
            for part in chunked(members, IN_CHUNK):
                ids = [campaign.id for campaign in part]
                guard = {"_id": {"$in": ids}, "version": version}
                model = UpdateMany(guard, update, namespace=self._uow.namespace(CAMPAIGNS))
                conflict = (
                    f"{CAMPAIGNS}: not all of {len(ids)} campaigns (first {ids[0]}) "
                    f"still at version {version}"
                )
                self._uow.stage(Write(model, conflict=conflict, matches=len(ids)))
            for campaign in members:
                self._uow.track(campaign)

    def _saving(self, campaign: Campaign, document: Document) -> Write:
        """The campaign's compare-and-set, with its durable timer as its pending events leave it
        (set, moved or removed; kept when they do not move it), in the same update."""
        unset = None
        if campaign.moves_timer():
            timer = campaign.due_timer()
            if timer is None:
                unset = TIMER
            else:
                document = {**document, TIMER: docs.timer_document(timer)}
        return _compare_and_set(self._uow, CAMPAIGNS, campaign, document, unset=unset)


# A campaign's timer as a grouped update writes it: kept (None), removed (`_REMOVED`), or set to
# (action, set_at): the transition's time field of the document, never before `set_at`.
_TimerShape = tuple[str, datetime] | str | None
_REMOVED = "removed"
_ALONE = "alone"  # a timer no grouped update can express: saved on its own
# Stands for the campaign's id in the timer id an update pipeline builds (no id holds it).
_ID_MARK = "\x00"
# The document field that holds each transition's time.
_TIMER_TARGETS = {"activate": "starts_at", "complete": "ends_at"}


def _timer_shape(campaign: Campaign, document: Document) -> _TimerShape:
    if not campaign.moves_timer():
        return None
    timer = campaign.due_timer()
    if timer is None:
        return _REMOVED
    field = _TIMER_TARGETS.get(timer.action)
    set_at = campaign.timer_set_at()
    if (
        field is None
        or document.get(field) != timer.target_at
        or timer.due_at != max(timer.target_at, set_at)
        or timer.timer_id != timer_id(campaign.id, campaign.version, timer.action)
    ):
        return _ALONE
    return (timer.action, set_at)


def _grouped_update(changed: Document, shape: _TimerShape, version: int) -> Document | list[Document]:
    """The update of a group of campaigns that changed alike: `changed` set, and their timers."""
    if shape is None:
        return {"$set": changed}
    if shape == _REMOVED:
        return {"$set": changed, "$unset": {TIMER: ""}}
    assert isinstance(shape, tuple)
    action, set_at = shape
    target = f"${_TIMER_TARGETS[action]}"
    # An update pipeline, so each campaign's timer is computed from its own document; the
    # changed values as literals (a string starting with "$" would read a field).
    fields = {k: {"$literal": v} for k, v in changed.items()}
    # The domain's `timer_id` around each campaign's own id.
    before_id, after_id = timer_id(_ID_MARK, version, action).split(_ID_MARK)
    fields[TIMER] = {
        "timer_id": {"$concat": [before_id, "$_id", after_id]},
        "action": {"$literal": action},
        "target_at": target,
        "due_at": {"$max": [target, {"$literal": set_at}]},
    }
    return [{"$set": fields}]


def _compare_and_set(
    uow: MongoUnitOfWork, collection: str, aggregate: Aggregate, document: Document, unset: str | None = None
) -> Write:
    """The aggregate's document written over the one at its stored version (`unset`: a field
    removed in the same update)."""
    fields = {k: v for k, v in document.items() if k != "_id"}
    update: Document = {"$set": fields}
    if unset is not None:
        update["$unset"] = {unset: ""}
    return Write(
        UpdateOne(_cas_filter(aggregate), update, namespace=uow.namespace(collection)),
        conflict=f"{collection} {aggregate.id} is no longer at version {aggregate.stored_version}",
    )


class MongoRefreshTokenRepository:
    def __init__(self, uow: MongoUnitOfWork) -> None:
        self._uow = uow

    async def get(self, token_hash: str) -> RefreshToken | None:
        doc = await self._uow.db[REFRESH_TOKENS].find_one({"_id": token_hash})
        return docs.refresh_token_from_document(doc) if doc else None

    def add(self, token: RefreshToken) -> None:
        document = docs.refresh_token_document(token)
        self._uow.stage(Write(InsertOne(document, namespace=self._uow.namespace(REFRESH_TOKENS))))

    def mark_used(self, token: RefreshToken) -> None:
        model = UpdateOne(
            {"_id": token.token_hash, "used_at": None, "revoked_at": None},
            {"$set": {"used_at": token.used_at}},
            namespace=self._uow.namespace(REFRESH_TOKENS),
        )
        self._uow.stage(Write(model, conflict="refresh token used or revoked meanwhile"))

    # Staged like every other write: a revocation commits in the unit of work's transaction, so
    # it is atomic with what goes with it (a password change) and never a plain multi-document
    # write that could meet an open transaction's documents (SecantusDB retries such a write
    # forever; inside a transaction the meeting is a WriteConflict, and the unit of work retries).
    def revoke_family(self, family_id: str, now: datetime) -> None:
        model = UpdateMany(
            {"family_id": family_id, "revoked_at": None},
            {"$set": {"revoked_at": now}},
            namespace=self._uow.namespace(REFRESH_TOKENS),
        )
        self._uow.stage(Write(model))

    def revoke_user(self, user_id: str, now: datetime, *, keep_family: str | None = None) -> None:
        query: dict[str, Any] = {"user_id": user_id, "revoked_at": None}
        if keep_family is not None:
            query["family_id"] = {"$ne": keep_family}
        model = UpdateMany(
            query, {"$set": {"revoked_at": now}}, namespace=self._uow.namespace(REFRESH_TOKENS)
        )
        self._uow.stage(Write(model))


class MongoIdempotencyRepository:
    def __init__(self, uow: MongoUnitOfWork) -> None:
        self._uow = uow

    async def get(self, scope: str, key: str) -> IdempotentOutcome | None:
        doc = await self._uow.db[IDEMPOTENCY_KEYS].find_one({"_id": docs.idempotency_id(scope, key)})
        return docs.idempotency_from_document(doc) if doc else None

    def add(self, outcome: IdempotentOutcome) -> None:
        model = InsertOne(docs.idempotency_document(outcome), namespace=self._uow.namespace(IDEMPOTENCY_KEYS))
        self._uow.stage(Write(model, duplicate=lambda _: IdempotencyKeyTaken(outcome.key)))
