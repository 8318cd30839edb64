#include "common/pipelines.h"

namespace switchyard::pipelines {

std::string ModelPipelineNames() {
  std::string names;
  for (const PipelineInfo& info : kPipelineTable) {
    if (!info.model_pipeline) continue;
    if (!names.empty()) names += ", ";
    names += info.name;
  }
  return names;
}

}  // namespace switchyard::pipelines
