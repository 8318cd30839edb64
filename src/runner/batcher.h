// Dynamic batching for the model executor: which jobs may share one forward pass, how long a
// batch waits for companions, and how the inputs are stacked and the output split back per job.
// It knows nothing of threads or queues' locking: the executor calls it under its own lock.
#pragma once

#include <algorithm>
#include <deque>
#include <string>
#include <vector>

#include <torch/script.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace switchyard::runner {

class Batcher {
 public:
  // `max_batch_size` 1 disables batching; `max_queue_delay` is how long a batch waits to fill.
  Batcher(int max_batch_size, absl::Duration max_queue_delay)
      : max_batch_size_(max_batch_size), max_queue_delay_(max_queue_delay) {}

  int max_batch_size() const { return max_batch_size_; }
  // A tensor may ride in a batch when batching is on and its batch dimension (0) is 1.
  bool Batchable(const at::Tensor& input) const {
    return max_batch_size_ > 1 && input.dim() >= 1 && input.size(0) == 1;
  }
  bool Full(size_t batch_size) const { return static_cast<int>(batch_size) >= max_batch_size_; }
  // Until when a batch whose first job was taken `now` waits for companions: never past that
  // job's own deadline.
  absl::Time FillUntil(absl::Time now, absl::Time first_deadline) const {
    return std::min(now + max_queue_delay_, first_deadline);
  }
  // Whether `candidate` may share a forward pass with `first`: same sizes and dtype.
  static bool Compatible(const at::Tensor& first, const at::Tensor& candidate) {
    return candidate.sizes() == first.sizes() && candidate.scalar_type() == first.scalar_type();
  }

  // Moves the queued jobs that may join `batch` (led by batch.front(), a batchable job) from
  // `queue` into `batch`, oldest first, until it is full. A Job has `bool batchable` and its
  // tensor in `inputs[0]`.
  template <typename Job>
  void Gather(std::deque<Job>& queue, std::vector<Job>& batch) const {
    const at::Tensor& first = batch.front().inputs[0].toTensor();
    for (auto it = queue.begin(); it != queue.end() && !Full(batch.size());) {
      if (it->batchable && Compatible(first, it->inputs[0].toTensor())) {
        batch.push_back(std::move(*it));
        it = queue.erase(it);
      } else {
        ++it;
      }
    }
  }

  // The inputs of a batch, concatenated along dimension 0.
  static at::Tensor Stack(const std::vector<at::Tensor>& inputs);
  // Splits a batched forward's output into one result per job (row i for job i). Every job gets
  // the error of a failed pass, or INVALID_ARGUMENT (naming `model_name`) when the output does not
  // have one row per input.
  static std::vector<absl::StatusOr<at::Tensor>> Split(const absl::StatusOr<at::Tensor>& output,
                                                       size_t inputs,
                                                       const std::string& model_name);

 private:
  const int max_batch_size_;
  const absl::Duration max_queue_delay_;
};

}  // namespace switchyard::runner
