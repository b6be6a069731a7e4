package io.sensorlake.beam;

import org.apache.beam.runners.flink.FlinkJobServerDriver;
import org.apache.beam.runners.jobsubmission.JobServerDriver;

/**
 * Beam's Flink job server (same flags as FlinkJobServerDriver), with the job and artifact
 * endpoints bound to --job-host only instead of every interface, staging one job jar with each
 * job instead of its classpath ({@link JobJarInvoker}).
 */
public final class JobServer extends JobServerDriver {
  private JobServer(FlinkJobServerDriver.FlinkServerConfiguration config) {
    super(
        config,
        new LoopbackServerFactory(config.getHost()),
        new LoopbackServerFactory(config.getHost()),
        () -> new JobJarInvoker(config));
  }

  public static void main(String[] args) {
    FlinkJobServerDriver.FlinkServerConfiguration config = FlinkJobServerDriver.parseArgs(args);
    new JobServer(config).run();
  }
}
