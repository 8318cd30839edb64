#include "orchestrator/pipelines/stop_strings.h"

#include <algorithm>
#include <utility>

namespace switchyard::orchestrator {

StopStringFilter::StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
  for (const auto& s : stops_) longest_ = std::max(longest_, s.size());
}

std::string StopStringFilter::Push(std::string_view delta) {
  if (stopped_) return "";
  if (stops_.empty()) return std::string(delta);
  held_.append(delta);
  // The earliest stop string in the text so far ends it. held_ never contains a whole stop
  // string from before (it would have been found then), so searching all of it is enough.
  size_t first = std::string::npos;
  for (const auto& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    return out;
  }
  // Hold back the longest tail that is the start of some stop string; release the rest. The tail
  // starts where a stop string would, so it never splits a UTF-8 character of valid text.
  size_t keep = 0;
  const size_t max_tail = std::min(held_.size(), longest_ - 1);
  for (size_t n = max_tail; n > 0 && keep == 0; --n) {
    std::string_view tail(held_.data() + held_.size() - n, n);
    for (const auto& s : stops_) {
      if (s.size() > n && std::string_view(s).substr(0, n) == tail) {
        keep = n;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStringFilter::Flush() {
  if (stopped_) return "";
  return std::exchange(held_, std::string());
}

}  // namespace switchyard::orchestrator
