"""When the outbox relay waits for the changes right behind a new one (`relay_linger_ms`).

Each Kafka transaction costs the relay and the broker about as much as its records (its
AddPartitionsToTxn and EndTxn requests, the commit markers, and the fetches they wake in every
consumer group), so under a steady flow it pays to let the change right behind a new one join
its transaction. A fixed wait would add itself to every event's freshness, the lone command of a
quiet hour's included. So the relay lingers only while changes keep coming: when the new change
arrived within one linger of the change before it (`ChangeFeed.arrival_gap`). A change after a
quiet spell goes at once; under a flow faster than one change per linger, transactions take two
or more changes each and each change waits at most one linger for the ones behind it.

The gap is measured between arrivals, not from the end of the previous publish: from there a
linger would prolong itself (the publish ends a linger later, so the next change looks close),
and at 40 to 65 changes a second, slower than one per 15 ms linger (the default then), every
change waited out a linger that caught nothing.

The linger counts from the first change's arrival, not from when the relay takes it: changes that
queued while the previous transaction was being committed have already waited that long, and
under a flow fast enough to keep the relay busy they go as soon as it is free, with whatever
came behind them. (Counted from the taking, they waited a whole commit and then a whole linger:
at 200 commands/s a change's freshness p50 was 36 ms, of which ~15 before the relay sent it.)
"""

from __future__ import annotations


def linger(seconds: float, arrival_gap: float | None, waited: float = 0.0) -> float:
    """How long to wait before publishing a change that arrived `arrival_gap` seconds after the
    change before it (None: the first since the stream opened) and has waited `waited` seconds
    since: what is left of one linger while changes come closer together than that, else 0 (at
    once). A linger of 0 never waits."""
    if arrival_gap is None or arrival_gap >= seconds:
        return 0.0
    return max(0.0, seconds - waited)
