package io.sensorlake.beam;

import java.util.Arrays;
import java.util.Map;
import org.apache.beam.model.expansion.v1.ExpansionApi;
import org.apache.beam.model.pipeline.v1.RunnerApi;
import org.apache.beam.sdk.expansion.service.ExpansionService;
import org.apache.beam.sdk.expansion.service.ExpansionServiceOptions;
import org.apache.beam.sdk.options.PipelineOptions;
import org.apache.beam.sdk.options.PipelineOptionsFactory;
import org.apache.beam.sdk.util.construction.Environments;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.stub.StreamObserver;

/**
 * Beam's expansion service (KafkaIO and the other Java transforms on this classpath), bound to one
 * host. Usage: ExpansionServer HOST PORT [--defaultEnvironmentType=EMBEDDED ...].
 *
 * <p>An EMBEDDED environment leaves the expansion without its dependencies. Beam lists the
 * service's whole classpath there (190 jars, 190 MB), and every submission then copied them from
 * here into the submitting Python process and from there to the job server, which never used
 * them: EMBEDDED transforms run in the Flink job itself, whose classes come from the one job jar
 * ({@link JobJarInvoker}). That copying was about 5 s of the time from submission to RUNNING
 * (bench/PIPELINE.md). Other environment types keep their dependencies.
 */
public final class ExpansionServer {
  /** Beam's URN of an EMBEDDED environment is its type name itself. */
  static final String EMBEDDED_URN = Environments.ENVIRONMENT_EMBEDDED;

  public static void main(String[] args) throws Exception {
    String host = args[0];
    int port = Integer.parseInt(args[1]);
    PipelineOptionsFactory.register(ExpansionServiceOptions.class);
    PipelineOptions options =
        PipelineOptionsFactory.fromArgs(Arrays.copyOfRange(args, 2, args.length)).create();
    ExpansionService service = new WithoutEmbeddedDependencies(options, host + ":" + port);
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

  /** The expansion, with the dependencies of its EMBEDDED environments cleared. */
  static ExpansionApi.ExpansionResponse withoutEmbeddedDependencies(ExpansionApi.ExpansionResponse response) {
    if (!response.hasComponents()) {
      return response;
    }
    RunnerApi.Components.Builder components = response.getComponents().toBuilder();
    for (Map.Entry<String, RunnerApi.Environment> e : response.getComponents().getEnvironmentsMap().entrySet()) {
      if (EMBEDDED_URN.equals(e.getValue().getUrn()) && e.getValue().getDependenciesCount() > 0) {
        components.putEnvironments(e.getKey(), e.getValue().toBuilder().clearDependencies().build());
      }
    }
    return response.toBuilder().setComponents(components).build();
  }

  private static final class WithoutEmbeddedDependencies extends ExpansionService {
    WithoutEmbeddedDependencies(PipelineOptions options, String address) {
      super(options, address);
    }

    @Override
    public void expand(
        ExpansionApi.ExpansionRequest request, StreamObserver<ExpansionApi.ExpansionResponse> observer) {
      super.expand(request, new StreamObserver<ExpansionApi.ExpansionResponse>() {
        @Override
        public void onNext(ExpansionApi.ExpansionResponse response) {
          observer.onNext(withoutEmbeddedDependencies(response));
        }

        @Override
        public void onError(Throwable t) {
          observer.onError(t);
        }

        @Override
        public void onCompleted() {
          observer.onCompleted();
        }
      });
    }
  }
}
