// Closed-loop load for the benchmarks that send jobs through daemons (hop_bench,
// shared_state_bench): `concurrency` threads each send one job after another for `seconds`;
// throughput and the latency percentiles of every job, pooled.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace switchyard::bench {

using Clock = std::chrono::steady_clock;

inline double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

struct LoadResult {
  double jobs_per_s = 0;
  double p50 = 0, p99 = 0;  // ms
  int failures = 0;
};

// `call` runs one job and returns whether it succeeded; `warmup` calls first, not measured
// (connections open, models warm, proxies' keepalive pools filled).
template <typename Call>
LoadResult MeasureClosedLoop(int concurrency, double seconds, int warmup, Call call) {
  for (int i = 0; i < warmup; ++i) call();
  std::vector<std::vector<double>> lat(static_cast<size_t>(concurrency));
  std::atomic<int> failures{0};
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int c = 0; c < concurrency; ++c) {
    threads.emplace_back([&, c] {
      while (Clock::now() < end) {
        auto t0 = Clock::now();
        if (!call()) ++failures;
        lat[static_cast<size_t>(c)].push_back(Ms(Clock::now() - t0));
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  return LoadResult{static_cast<double>(all.size()) / seconds, Percentile(all, 0.5),
                    Percentile(all, 0.99), failures.load()};
}

}  // namespace switchyard::bench
