"""The Kafka consumer: a consumer group in, result and error topics out, at-least-once.

Every consumed message gets exactly one record, on the output topic or the error topic, and its offset is
committed only once the broker has acknowledged that record. So a crash loses nothing: what was not
committed is consumed again (a duplicate result is possible, a missing one is not).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from v2serve.errors import V2ServeError
from v2serve.event import Addressed, Event
from v2serve.metrics.streams import StreamStats
from v2serve.settings import KafkaSettings
from v2serve.streams.messages import OutgoingRecord, error_record, event_from_message, record_for_reply
from v2serve.streams.offsets import OffsetTracker
from v2serve.streams.retry import Backoff, Handle, serve_event, wait_or_stop

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

logger = logging.getLogger("v2serve.streams.kafka")


class KafkaWorker:
    """Serves the input topics of ``settings`` with ``handle`` until ``run``'s stop event is set.

    At most ``max_in_flight`` messages are served at once; at the bound the assigned partitions are paused, so
    that the consumer stops fetching rather than buffering without limit. When partitions are taken away in a
    rebalance, or on stop, the messages in flight finish and their offsets are committed first.
    """

    trigger = "kafka"

    @property
    def outputs(self) -> tuple[str, str]:
        return self.settings.output_topic, self.settings.error_topic

    def __init__(self, handle: Handle, settings: KafkaSettings, drain_timeout_s: float = 30.0) -> None:
        if not settings.bootstrap_servers:
            raise ValueError("the Kafka worker needs bootstrap_servers")
        self.settings = settings
        self.stats = StreamStats()
        self._handle = handle
        self._drain_timeout_s = drain_timeout_s
        self._tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        self._producer = await self._connect(self._new_producer, stop)
        if self._producer is None:
            return
        try:
            self._consumer = await self._connect(self._new_consumer, stop)
            if self._consumer is None:
                return
            try:
                await self._consume(self._consumer, stop)
            finally:
                await self._drain(self._consumer)
                await self._bounded(self._consumer.stop(), "leaving the consumer group")
        finally:
            await self._bounded(self._producer.stop(), "closing the producer")

    async def _bounded(self, closing: Awaitable[None], what: str) -> None:
        """Shutdown steps wait on the broker; with the broker gone they would wait for ever.

        The step runs as a task of its own because aiokafka's close can end in a CancelledError of its
        internal fetch tasks, which must not look like this worker being cancelled.
        """
        step = asyncio.ensure_future(closing)
        done, _ = await asyncio.wait({step}, timeout=self._drain_timeout_s)
        if not done:
            step.cancel()
            logger.warning("gave up %s after %.0f s: the broker does not answer", what, self._drain_timeout_s)
        elif not step.cancelled() and step.exception() is not None:
            logger.warning("%s failed: %s", what, step.exception())

    # -- clients -------------------------------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        s = self.settings
        options: dict[str, Any] = {"bootstrap_servers": s.bootstrap_servers, "security_protocol": s.security_protocol}
        if s.sasl_mechanism is not None:
            options.update(
                sasl_mechanism=s.sasl_mechanism,
                sasl_plain_username=s.sasl_plain_username,
                sasl_plain_password=s.sasl_plain_password,
            )
        if "SSL" in s.security_protocol:
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=s.ssl_cafile, certfile=s.ssl_certfile, keyfile=s.ssl_keyfile
            )
        return {**options, **s.client_options}

    def _new_producer(self) -> AIOKafkaProducer:
        # A full batch makes every send behind it wait for its drain (a future and a timer each): at aiokafka's
        # 16 KiB, about 60 results fill one, and a burst spent a fifth of its time waiting so.
        options = {
            "acks": "all",
            "linger_ms": 2,
            "max_batch_size": 256 * 1024,
            **self._client_options(),
            **self.settings.producer_options,
        }
        return AIOKafkaProducer(**options)

    def _new_consumer(self) -> AIOKafkaConsumer:
        options = {
            "auto_offset_reset": self.settings.auto_offset_reset,
            **self._client_options(),
            **self.settings.consumer_options,
            # Not overridable: committing after the result is acknowledged is what makes delivery at-least-once.
            "group_id": self.settings.group_id,
            "enable_auto_commit": False,
        }
        consumer = AIOKafkaConsumer(**options)
        consumer.subscribe(self.settings.input_topics, listener=_HandBackOnRevoke(self))
        return consumer

    async def _connect(self, new_client: Callable[[], AIOKafkaConsumer | AIOKafkaProducer], stop: asyncio.Event) -> Any:
        """Start a client, retrying with back-off while the brokers cannot be reached; None once stopped."""
        backoff = Backoff(0.25)
        while not stop.is_set():
            client = new_client()
            try:
                await client.start()
                return client
            except KafkaError as exc:
                await client.stop()
                delay = backoff.next()
                servers = self.settings.bootstrap_servers
                logger.warning("cannot reach Kafka at %s (%s); retrying in %.1f s", servers, exc, delay)
                await wait_or_stop(stop, delay)
        return None

    # -- consuming -----------------------------------------------------------------------------------------

    async def _consume(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        interval_s = self.settings.commit_interval_ms / 1000
        loop = asyncio.get_running_loop()
        next_commit = loop.time() + interval_s
        while not stop.is_set():
            room = self.settings.max_in_flight - len(self._tasks)
            if room > 0:
                batches = await consumer.getmany(
                    timeout_ms=max(50, min(500, self.settings.commit_interval_ms)), max_records=room
                )
                for partition, records in batches.items():
                    for record in records:
                        self._start(partition, record)
                    end = consumer.highwater(partition)
                    if end is not None:
                        self.stats.lag[(partition.topic, str(partition.partition))] = end - records[-1].offset - 1
            else:
                await self._wait_for_room(consumer, stop, interval_s)
            if loop.time() >= next_commit:
                await self._commit(consumer)
                next_commit = loop.time() + interval_s

    def _start(self, partition: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        self.stats.consumed[record.topic] += 1
        self._tracker.start(partition, record.offset)
        task = asyncio.create_task(self._serve(partition, record))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("serving a message failed", exc_info=task.exception())
        self._room.set()

    async def _wait_for_room(self, consumer: AIOKafkaConsumer, stop: asyncio.Event, timeout_s: float) -> None:
        """At the in-flight bound: pause fetching until a message finishes (or it is time to commit)."""
        paused = consumer.assignment()
        consumer.pause(*paused)
        self._room.clear()
        try:
            await asyncio.wait_for(self._room.wait(), max(timeout_s, 0.05))
        except asyncio.TimeoutError:
            pass
        finally:
            consumer.resume(*(paused & consumer.assignment()))

    async def _serve(self, partition: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        event = event_from_message(record.value, record.key, record.headers, self.trigger)
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        reply = await serve_event(self._handle, event, where, self.settings.retry)
        await self._produce(event, record.key, record_for_reply(event, record.key, reply), reply.addressed)
        self._tracker.finish(partition, record.offset)

    # -- producing -----------------------------------------------------------------------------------------

    async def _produce(
        self, event: Event, key: bytes | None, record: OutgoingRecord, addressed: Addressed | None
    ) -> None:
        """Write ``record`` and wait for the broker's acknowledgement, retrying until it is given.

        A result the broker refuses for good (too large, say) is replaced by an error record saying so.
        """
        assert self._producer is not None
        backoff = None  # made on the first failure: most records need none
        while True:
            topic = self.settings.error_topic if record.is_error else self.settings.output_topic
            try:
                delivery = await self._producer.send(topic, record.value, key=record.key, headers=record.headers)
                await delivery
            except KafkaError as exc:
                if not exc.retriable and not record.is_error:
                    failure = V2ServeError(f"the result could not be written to {topic}: {exc}")
                    record = error_record(event, key, failure, addressed)
                    continue
                backoff = backoff or Backoff()
                delay = backoff.next()
                logger.warning("writing to %s failed (%s); retrying in %.1f s", topic, exc, delay)
                await asyncio.sleep(delay)
            else:
                if record.is_error:
                    self.stats.errors += 1
                else:
                    self.stats.results += 1
                return

    # -- committing ----------------------------------------------------------------------------------------

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        offsets = self._tracker.committable()
        if not offsets:
            return
        try:
            # aiokafka waits for the group coordinator for as long as it takes; a commit may not.
            await asyncio.wait_for(consumer.commit(offsets), self._drain_timeout_s)
        except (KafkaError, asyncio.TimeoutError) as exc:
            # Nothing is lost: the offsets stay uncommitted and are tried again, or redelivered elsewhere.
            logger.warning("committing offsets failed (%s); will retry", exc or type(exc).__name__)
        else:
            self._tracker.mark_committed(offsets)

    async def _drain(self, consumer: AIOKafkaConsumer) -> None:
        """Let the messages in flight finish (up to the drain timeout), then commit what finished."""
        if self._tasks:
            logger.info("finishing %d message(s) in flight", len(self._tasks))
            _, late = await asyncio.wait(set(self._tasks), timeout=self._drain_timeout_s)
            for task in late:
                task.cancel()
            if late:
                # Their offsets stay uncommitted, so these messages will be served again after a restart.
                logger.warning("%d message(s) did not finish in %.0f s", len(late), self._drain_timeout_s)
                await asyncio.wait(late)
        await self._commit(consumer)

    async def hand_back(self, revoked: set[TopicPartition]) -> None:
        """Before a rebalance takes ``revoked`` away: finish what is in flight and commit it."""
        if self._consumer is None:
            return
        await self._drain(self._consumer)
        self._tracker.forget(list(revoked))


class _HandBackOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: KafkaWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.hand_back(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        names = ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)) or "none"
        logger.info("Kafka partitions assigned: %s", names)
