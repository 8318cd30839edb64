#include "common/metrics.h"

#include <prometheus/text_serializer.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_split.h"
#include "common/status.h"

namespace switchyard {
namespace {

// process_* metrics from /proc/self, as the Prometheus client libraries name them.
std::vector<prometheus::MetricFamily> ProcessMetrics() {
  std::vector<prometheus::MetricFamily> out;
  auto gauge = [&](const std::string& name, const std::string& help, double value,
                   prometheus::MetricType type = prometheus::MetricType::Gauge) {
    prometheus::MetricFamily f;
    f.name = name;
    f.help = help;
    f.type = type;
    prometheus::ClientMetric m;
    if (type == prometheus::MetricType::Counter) {
      m.counter.value = value;
    } else {
      m.gauge.value = value;
    }
    f.metric.push_back(m);
    out.push_back(std::move(f));
  };
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const size_t close = stat.rfind(')');
  if (close != std::string::npos) {
    std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ');
    // f[0] is field 3 (state); utime is field 14, stime 15, starttime 22, rss 24.
    if (f.size() > 22) {
      const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
      const double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;
      gauge("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", cpu,
            prometheus::MetricType::Counter);
      const double rss = std::stod(f[21]) * static_cast<double>(sysconf(_SC_PAGESIZE));
      gauge("process_resident_memory_bytes", "Resident memory size in bytes.", rss);
      std::ifstream uptime_file("/proc/uptime");
      double uptime = 0;
      uptime_file >> uptime;
      const double now =
          static_cast<double>(std::chrono::duration_cast<std::chrono::seconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count());
      const double started = now - uptime + std::stod(f[19]) / ticks;
      gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
            started);
    }
  }
  int fds = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  gauge("process_open_fds", "Number of open file descriptors.", fds);
  return out;
}

class MetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  MetricsInterceptor(Metrics* metrics, grpc::experimental::ServerRpcInfo* info)
      : metrics_(metrics), method_(info->method()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      metrics_->RecordRpc(
          method_, status.error_code(),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    methods->Proceed();
  }

 private:
  Metrics* metrics_;
  std::string method_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

class MetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit MetricsInterceptorFactory(Metrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new MetricsInterceptor(metrics_, info);
  }

 private:
  Metrics* metrics_;
};

}  // namespace

Metrics::Metrics(std::string daemon)
    : registry_(std::make_shared<prometheus::Registry>()), prefix_("switchyard_" + daemon + "_") {
  rpc_requests_ = &prometheus::BuildCounter()
                       .Name("switchyard_grpc_requests_total")
                       .Help("gRPC calls served, by service, method and status code.")
                       .Register(*registry_);
  rpc_duration_ = &prometheus::BuildHistogram()
                       .Name("switchyard_grpc_request_duration_seconds")
                       .Help("Time from a gRPC call's start to its status, by service and method.")
                       .Register(*registry_);
}

prometheus::Family<prometheus::Counter>& Metrics::CounterFamily(const std::string& name,
                                                                const std::string& help) {
  return prometheus::BuildCounter().Name(prefix_ + name).Help(help).Register(*registry_);
}

prometheus::Family<prometheus::Gauge>& Metrics::GaugeFamily(const std::string& name,
                                                            const std::string& help) {
  return prometheus::BuildGauge().Name(prefix_ + name).Help(help).Register(*registry_);
}

prometheus::Family<prometheus::Histogram>& Metrics::HistogramFamily(const std::string& name,
                                                                    const std::string& help) {
  return prometheus::BuildHistogram().Name(prefix_ + name).Help(help).Register(*registry_);
}

prometheus::Histogram::BucketBoundaries Metrics::LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}

void Metrics::OnScrape(std::function<void()> refresh) {
  MutexLock lock(&mu_);
  refreshers_.push_back(std::move(refresh));
}

void Metrics::RecordRpc(const std::string& full_method, grpc::StatusCode code, double seconds) {
  // "/package.Service/Method"
  std::string service = "unknown", method = full_method;
  const size_t slash = full_method.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    service = full_method.substr(1, slash - 1);
    method = full_method.substr(slash + 1);
  }
  rpc_requests_->Add({{"service", service}, {"method", method}, {"code", GrpcCodeName(code)}})
      .Increment();
  rpc_duration_->Add({{"service", service}, {"method", method}}, LatencyBuckets()).Observe(seconds);
}

std::string Metrics::Render() {
  std::vector<std::function<void()>> refreshers;
  {
    MutexLock lock(&mu_);
    refreshers = refreshers_;
  }
  for (auto& r : refreshers) r();
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (auto& f : ProcessMetrics()) families.push_back(std::move(f));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
Metrics::InterceptorFactory() {
  return std::make_unique<MetricsInterceptorFactory>(this);
}

void AddOperatorRoutes(Metrics* metrics, std::function<http::Response()> ready,
                       std::map<std::string, http::Handler>* routes) {
  (*routes)["/healthz"] = [](const http::Request&, http::Reply reply) {
    http::Response r;
    r.body = "ok\n";
    reply(std::move(r));
  };
  (*routes)["/readyz"] = [ready = std::move(ready)](const http::Request&, http::Reply reply) {
    reply(ready());
  };
  (*routes)["/metrics"] = [metrics](const http::Request&, http::Reply reply) {
    http::Response r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics->Render();
    reply(std::move(r));
  };
}

}  // namespace switchyard
