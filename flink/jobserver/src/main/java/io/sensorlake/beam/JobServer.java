package io.sensorlake.beam;

import org.apache.beam.runners.flink.FlinkJobInvoker;
import org.apache.beam.runners.flink.FlinkJobServerDriver;
import org.apache.beam.runners.jobsubmission.JobServerDriver;

/**
 * Beam's Flink job server (same flags as FlinkJobServerDriver), with the job and artifact
 * endpoints bound to --job-host only instead of every interface.
 */
public final class JobServer extends JobServerDriver {
  private JobServer(FlinkJobServerDriver.FlinkServerConfiguration config) {
    super(
        config,
        new LoopbackServerFactory(config.getHost()),
        new LoopbackServerFactory(config.getHost()),
        () -> FlinkJobInvoker.create(config));
  }

  public static void main(String[] args) {
    FlinkJobServerDriver.FlinkServerConfiguration config = FlinkJobServerDriver.parseArgs(args);
    new JobServer(config).run();
  }
}
