package io.sensorlake.beam;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.HashMap;
import java.util.Map;
import org.apache.beam.sdk.coders.ByteArrayCoder;
import org.apache.beam.sdk.coders.KvCoder;
import org.apache.beam.sdk.coders.VarLongCoder;
import org.apache.beam.sdk.io.kafka.KafkaIO;
import org.apache.beam.sdk.io.kafka.KafkaRecord;
import org.apache.beam.sdk.io.kafka.TimestampPolicyFactory;
import org.apache.beam.sdk.transforms.DoFn;
import org.apache.beam.sdk.transforms.ExternalTransformBuilder;
import org.apache.beam.sdk.transforms.PTransform;
import org.apache.beam.sdk.transforms.ParDo;
import org.apache.beam.sdk.transforms.windowing.GlobalWindow;
import org.apache.beam.sdk.values.KV;
import org.apache.beam.sdk.values.PBegin;
import org.apache.beam.sdk.values.PCollection;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.joda.time.Duration;
import org.joda.time.Instant;

/**
 * KafkaIO's read, handed to Python as one bytes element per Kafka partition per bundle.
 *
 * <p>Beam's own cross-language read gives Python one schema'd Row per record (metadata and a list
 * of header rows), and decoding those rows in Python was the largest single cost of the lake job
 * (bench/PIPELINE.md). Here the records of a bundle are packed per partition, in offset order,
 * into {@code KV<partition, batch>} (VarLong and bytes: coders Python knows), where a batch is a sequence of
 *
 * <pre>offset:int64 timestamp_ms:int64 key:bytes? value:bytes? headers:int32 (name:bytes value:bytes?)*</pre>
 *
 * with every bytes field an int32 length (-1 for null) and its bytes, big-endian
 * ({@code pipelines/kafka_io.py} unpacks it). A batch is cut early at {@link Config#maxRecords}
 * records or {@link Config#maxBytes} bytes, so one element stays a modest gRPC message. Each batch
 * carries the earliest record timestamp it holds, so it is never later than its records.
 */
public final class ReadKafkaBatches
    extends PTransform<PBegin, PCollection<KV<Long, byte[]>>> {

  public static final String URN = "beam:transform:io.sensorlake:read_kafka_batches:v1";

  private final Config config;

  ReadKafkaBatches(Config config) {
    this.config = config;
  }

  @Override
  public PCollection<KV<Long, byte[]>> expand(PBegin input) {
    Map<String, Object> consumer = new HashMap<>();
    consumer.put("group.id", config.groupId);
    consumer.put("auto.offset.reset", "earliest");
    consumer.put("enable.auto.commit", "false");
    return input
        .apply(
            "ReadFromKafka",
            KafkaIO.<byte[], byte[]>read()
                .withBootstrapServers(config.bootstrapServers)
                .withTopic(config.topic)
                .withKeyDeserializer(ByteArrayDeserializer.class)
                .withValueDeserializer(ByteArrayDeserializer.class)
                .withConsumerConfigUpdates(consumer)
                // The watermark follows the producers' (the bridge's) event time, as before.
                .withTimestampPolicyFactory(TimestampPolicyFactory.withCreateTime(Duration.ZERO))
                .commitOffsetsInFinalize())
        .apply("PackPerPartition", ParDo.of(new PackPerPartition(config.maxRecords, config.maxBytes)))
        .setCoder(KvCoder.of(VarLongCoder.of(), ByteArrayCoder.of()));
  }

  /** The settings Python sends (field names are the snake_case of the setters). */
  public static final class Config {
    String bootstrapServers;
    String topic;
    String groupId;
    long maxRecords = 20_000;
    long maxBytes = 1 << 20;

    public void setBootstrapServers(String v) {
      bootstrapServers = v;
    }

    public void setTopic(String v) {
      topic = v;
    }

    public void setGroupId(String v) {
      groupId = v;
    }

    public void setMaxRecords(Long v) {
      maxRecords = v;
    }

    public void setMaxBytes(Long v) {
      maxBytes = v;
    }
  }

  /** How the expansion service builds this transform from the Python payload. */
  public static final class Builder
      implements ExternalTransformBuilder<Config, PBegin, PCollection<KV<Long, byte[]>>> {
    @Override
    public PTransform<PBegin, PCollection<KV<Long, byte[]>>> buildExternal(Config config) {
      if (config.bootstrapServers == null || config.topic == null || config.groupId == null) {
        throw new IllegalArgumentException("bootstrap_servers, topic and group_id are required");
      }
      return new ReadKafkaBatches(config);
    }
  }

  /** Packs records per partition; a partition's batch leaves when full or when the bundle ends. */
  static final class PackPerPartition extends DoFn<KafkaRecord<byte[], byte[]>, KV<Long, byte[]>> {
    private final long maxRecords;
    private final long maxBytes;
    private transient Map<Long, Packer> open;

    PackPerPartition(long maxRecords, long maxBytes) {
      this.maxRecords = maxRecords;
      this.maxBytes = maxBytes;
    }

    @StartBundle
    public void startBundle() {
      open = new HashMap<>();
    }

    @ProcessElement
    public void process(ProcessContext c) throws IOException {
      KafkaRecord<byte[], byte[]> r = c.element();
      long partition = r.getPartition();
      Packer p = open.computeIfAbsent(partition, k -> new Packer());
      p.add(r);
      if (p.records >= maxRecords || p.out.size() >= maxBytes) {
        open.remove(partition);
        c.outputWithTimestamp(KV.of(partition, p.out.toByteArray()), p.earliest);
      }
    }

    @FinishBundle
    public void finishBundle(FinishBundleContext c) {
      for (Map.Entry<Long, Packer> e : open.entrySet()) {
        Packer p = e.getValue();
        c.output(KV.of(e.getKey(), p.out.toByteArray()), p.earliest, GlobalWindow.INSTANCE);
      }
      open = new HashMap<>();
    }

    /** A batch may carry a timestamp earlier than the record that completed it. */
    @Override
    @SuppressWarnings("deprecation")
    public Duration getAllowedTimestampSkew() {
      return Duration.millis(Long.MAX_VALUE);
    }
  }

  private static final class Packer {
    final ByteArrayOutputStream out = new ByteArrayOutputStream(64 * 1024);
    final DataOutputStream data = new DataOutputStream(out);
    long records;
    Instant earliest;

    void add(KafkaRecord<byte[], byte[]> r) throws IOException {
      data.writeLong(r.getOffset());
      data.writeLong(r.getTimestamp());
      bytes(r.getKV().getKey());
      bytes(r.getKV().getValue());
      Header[] headers = r.getHeaders() == null ? new Header[0] : r.getHeaders().toArray();
      data.writeInt(headers.length);
      for (Header h : headers) {
        bytes(h.key().getBytes(java.nio.charset.StandardCharsets.UTF_8));
        bytes(h.value());
      }
      Instant ts = new Instant(r.getTimestamp());
      if (earliest == null || ts.isBefore(earliest)) {
        earliest = ts;
      }
      records++;
    }

    private void bytes(byte[] b) throws IOException {
      if (b == null) {
        data.writeInt(-1);
      } else {
        data.writeInt(b.length);
        data.write(b);
      }
    }
  }
}
