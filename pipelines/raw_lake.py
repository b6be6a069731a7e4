"""The raw branch as one stateful stage per Kafka partition: parse, de-duplicate, write chunks.

Each partition's records arrive packed (pipelines/kafka_io.py). Everything the raw lake needs
depends on the partition alone: a chunk file holds consecutive offsets of one partition, and the
bridge keys every record by its sensor id, so all copies of a reading are in one partition and
de-duplication per partition is exact. One keyed DoFn does all three: a record crosses between
Flink and Python once, as bytes, where three stages made it cross three times as pickled rows
(bench/PIPELINE.md). The readings leave on tag ``readings`` for the 1-minute windows.
"""

from __future__ import annotations

from typing import Callable, Mapping

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec

from pipelines.batching import Batch
from pipelines.dedupe import SeenReadings
from pipelines.kafka_io import unpack_batch
from pipelines.parsing import ParseReadings
from pipelines.sinks import ChunkRows, ChunkWriter
from sensorlake.lake import Dataset
from sensorlake.registry import Sensor


class _RawLakePerPartition(ChunkWriter):
    """(kafka partition, packed batch) -> chunk files of raw/ and rejected/, plus the batch's
    Observations as one Batch on tag ``readings``."""

    SEEN = ReadModifyWriteStateSpec("seen", PickleCoder())  # sensor id -> what it has sent lately
    SEEN_BEFORE = BagStateSpec("seen_archive", PickleCoder())  # older event times (pipelines/dedupe.py)
    # Parsed rows become columns every PIECE records, so a bundle after a backlog (up to 50,000
    # records) never holds them all as Python dicts at once. It did not change the soak's peak of
    # objects, which was the keyed state of the windows (docs/results.md, K8-K9).
    PIECE = 4096

    def __init__(self, parse: ParseReadings, seen: SeenReadings, lake: str, datasets: Mapping[str, Dataset],
                 chunk_size: int, flush_seconds: float):
        super().__init__(lake, datasets, chunk_size, flush_seconds)
        self._parse = parse
        self._seen = seen
        self._duplicates = Metrics.counter("dedupe", "duplicates")
        self._unique = Metrics.counter("dedupe", "unique")
        self._archive_reads = Metrics.counter("dedupe", "archive_reads")
        self._compactions = Metrics.counter("dedupe", "archive_compactions")

    def start_bundle(self):
        self._parse.discard_counts()  # left by a batch that failed: counted again on its retry

    def process(self, element, seen=beam.DoFn.StateParam(SEEN), seen_before=beam.DoFn.StateParam(SEEN_BEFORE),
                rows=beam.DoFn.StateParam(ChunkWriter.ROWS), armed=beam.DoFn.StateParam(ChunkWriter.ARMED),
                flush=beam.DoFn.TimerParam(ChunkWriter.FLUSH)):
        batch = None
        records, pieces, unique, duplicates = [], [], 0, 0
        observations = Batch()
        now_ms = self._parse.now_ms()
        for kafka_record in unpack_batch(element):
            if len(records) >= self.PIECE:
                pieces.append(self.buffered_form(records))
                records = []
            out, observation = self._parse.parse(kafka_record, now_ms)
            if observation is not None:
                observations.append(observation)
                if batch is None:
                    batch = self._seen.open(seen.read(), seen_before.read)
                if batch.fresh(out.row):
                    unique += 1
                else:  # consumed, written nowhere; it still completes its chunk
                    duplicates += 1
                    out = out._replace(dataset=None, row=None)
            records.append(out)
        if batch is not None:
            self._commit(batch, seen, seen_before)
        self._unique.inc(unique)
        self._duplicates.inc(duplicates)
        self._parse.report_counts()
        if records:
            pieces.append(self.buffered_form(records))
        if pieces:
            self.buffer(ChunkRows.concat(pieces), rows, armed, flush)
        if observations:  # one element for the windows, not one per reading (bench/PIPELINE.md)
            yield beam.pvalue.TaggedOutput(ParseReadings.READINGS_TAG, observations)

    def _commit(self, batch, seen, seen_before):
        recent, pieces, rewrite = batch.commit()
        seen.write(recent)
        if rewrite:
            seen_before.clear()
        for piece in pieces:
            seen_before.add(piece)
        self._archive_reads.inc(batch.archive_reads)
        self._compactions.inc(batch.compactions)


class WriteRawLake(beam.PTransform):
    """(kafka partition, packed batch) -> raw/ and rejected/ chunk files; returns the readings
    for the 1-minute windows, as Batches of Observations (one per packed batch)."""

    def __init__(self, registry: Mapping[str, Sensor] | Callable[[], Mapping[str, Sensor]], lake: str,
                 datasets: Mapping[str, Dataset], *, topic_prefix: str = "sensors",
                 chunk_size: int = 10_000, flush_seconds: float = 10.0, clock=None,
                 seen: SeenReadings | None = None):
        super().__init__()
        parse = ParseReadings(registry, topic_prefix=topic_prefix, **({"clock": clock} if clock is not None else {}))
        self._stage = _RawLakePerPartition(parse, seen or SeenReadings(), lake, datasets, chunk_size, flush_seconds)

    def expand(self, batches):
        out = batches | "ParseDedupeWrite" >> beam.ParDo(self._stage).with_outputs(
            ParseReadings.READINGS_TAG, main="written")
        return out[ParseReadings.READINGS_TAG]
