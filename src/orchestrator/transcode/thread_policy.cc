#include "orchestrator/transcode/thread_policy.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace switchyard::orchestrator::transcode {

ThreadPlan PlanThreads(const ThreadPolicyInputs& inputs) {
  const int cores = std::max(1, inputs.cores);
  const int in_flight = std::max(1, inputs.segments_in_flight);
  const size_t n = inputs.rendition_pixels.size();
  ThreadPlan plan;
  plan.encoder_threads.assign(n, 1);
  const int share = std::max(1, cores / in_flight);
  if (in_flight < cores && share > 1 && n > 0) {
    plan.decoder_threads = std::clamp(share / 4, 1, 4);
    // share - 1 extra encoder threads over the one each rendition has, by pixels.
    const int extra = share - 1;
    double total = 0;
    for (int64_t p : inputs.rendition_pixels) total += static_cast<double>(std::max<int64_t>(p, 1));
    std::vector<double> remainder(n);
    int given = 0;
    for (size_t i = 0; i < n; ++i) {
      const double exact =
          extra * static_cast<double>(std::max<int64_t>(inputs.rendition_pixels[i], 1)) / total;
      const int whole = static_cast<int>(exact);
      plan.encoder_threads[i] += whole;
      given += whole;
      remainder[i] = exact - whole;
    }
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      if (remainder[a] != remainder[b]) return remainder[a] > remainder[b];
      return inputs.rendition_pixels[a] > inputs.rendition_pixels[b];
    });
    for (size_t k = 0; given < extra && k < n; ++k, ++given) ++plan.encoder_threads[order[k]];
    for (int& t : plan.encoder_threads) t = std::min(t, kMaxThreadsPerCodec);
  }
  plan.description = absl::StrCat(
      "decoder ", plan.decoder_threads, ", encoders ", absl::StrJoin(plan.encoder_threads, "/"),
      " (", cores, " cores, ", in_flight, in_flight == 1 ? " segment" : " segments", " in flight)");
  return plan;
}

}  // namespace switchyard::orchestrator::transcode
