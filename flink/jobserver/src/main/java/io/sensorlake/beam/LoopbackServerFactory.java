package io.sensorlake.beam;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.util.List;
import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.sdk.fn.server.GrpcContextHeaderAccessorProvider;
import org.apache.beam.sdk.fn.server.ServerFactory;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyServerBuilder;

/**
 * Beam's default server factory listens on every interface (NettyServerBuilder.forPort); our
 * services must only be reachable from this machine, so this one binds to a single host.
 */
final class LoopbackServerFactory extends ServerFactory {
  private final String host;

  LoopbackServerFactory(String host) {
    this.host = host;
  }

  @Override
  public Server allocateAddressAndCreate(
      List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder descriptor)
      throws IOException {
    int port;
    try (ServerSocket probe = new ServerSocket(0, 1, java.net.InetAddress.getByName(host))) {
      port = probe.getLocalPort();
    }
    Server server = build(services, new InetSocketAddress(host, port));
    descriptor.setUrl(host + ":" + server.getPort());
    return server;
  }

  @Override
  public Server create(List<BindableService> services, Endpoints.ApiServiceDescriptor descriptor)
      throws IOException {
    String url = descriptor.getUrl();
    int port = Integer.parseInt(url.substring(url.lastIndexOf(':') + 1));
    return build(services, new InetSocketAddress(host, port));
  }

  private static Server build(List<BindableService> services, InetSocketAddress address)
      throws IOException {
    NettyServerBuilder builder =
        NettyServerBuilder.forAddress(address)
            // Artifacts (the pipeline's Python and Java dependencies) arrive in large messages.
            .maxInboundMessageSize(Integer.MAX_VALUE)
            .permitKeepAliveWithoutCalls(true)
            .permitKeepAliveTime(20, java.util.concurrent.TimeUnit.SECONDS);
    for (BindableService service : services) {
      builder.addService(
          ServerInterceptors.intercept(service, GrpcContextHeaderAccessorProvider.interceptor()));
    }
    return builder.build().start();
  }
}
