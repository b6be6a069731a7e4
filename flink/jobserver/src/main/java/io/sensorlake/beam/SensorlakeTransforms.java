package io.sensorlake.beam;

import java.util.Map;
import org.apache.beam.sdk.expansion.ExternalTransformRegistrar;
import org.apache.beam.sdk.transforms.ExternalTransformBuilder;

/** Our Java transforms, found by the expansion service through META-INF/services. */
public final class SensorlakeTransforms implements ExternalTransformRegistrar {
  @Override
  public Map<String, ExternalTransformBuilder<?, ?, ?>> knownBuilderInstances() {
    return Map.of(ReadKafkaBatches.URN, new ReadKafkaBatches.Builder());
  }
}
