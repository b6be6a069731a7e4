package io.sensorlake.beam;

import java.util.Arrays;
import org.apache.beam.sdk.expansion.service.ExpansionService;
import org.apache.beam.sdk.expansion.service.ExpansionServiceOptions;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;

/**
 * Beam's expansion service (KafkaIO and the other Java transforms on this classpath), bound to one
 * host. Usage: ExpansionServer HOST PORT [--defaultEnvironmentType=EMBEDDED ...].
 */
public final class ExpansionServer {
  public static void main(String[] args) throws Exception {
    String host = args[0];
    int port = Integer.parseInt(args[1]);
    PipelineOptionsFactory.register(ExpansionServiceOptions.class);
    PipelineOptions options =
        PipelineOptionsFactory.fromArgs(Arrays.copyOfRange(args, 2, args.length)).create();
    ExpansionService service = new ExpansionService(options, host + ":" + port);
    org.apache.beam.sdk.expansion.service.ExpansionServer server =
        org.apache.beam.sdk.expansion.service.ExpansionServer.create(service, host, port);
    System.out.println("Expansion service listening on " + host + ":" + server.getPort());
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try {
        server.close();
      } catch (Exception ignored) {
        // shutting down anyway
      }
    }));
    Thread.currentThread().join();
  }
}
