// The image pipelines' unit-test fixture (image_pipelines_test.cc,
// image_pipelines_limits_test.cc): deterministic test images and tiny TorchScript models started
// as executors with a model config.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/media/image_codec.h"
#include "orchestrator/pipelines/image_pipelines.h"
#include "runner/model_executor.h"
#include "runner/torch_model.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::orchestrator::image_pipelines_test {

namespace fs = std::filesystem;
using ::switchyard::testing::SaveScriptModule;
using ::switchyard::testing::TempDir;

// A deterministic test image: value (x * 3 + y * 5 + c * 7) % 256.
inline media::RgbImage MakeImage(int w, int h) {
  media::RgbImage img{w, h, {}};
  img.pixels.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c) {
        img.pixels[(static_cast<size_t>(y) * w + x) * 3 + c] =
            static_cast<uint8_t>((x * 3 + y * 5 + c * 7) % 256);
      }
    }
  }
  return img;
}

inline std::string Png(const media::RgbImage& img) {
  auto png = media::EncodePng(img);
  EXPECT_TRUE(png.ok()) << png.status();
  return png.ok() ? *png : std::string();
}

inline int Pixel(const media::RgbImage& img, int x, int y, int c) {
  return img.pixels[(static_cast<size_t>(y) * img.width + x) * 3 + c];
}

class ImagePipelinesTest : public ::testing::Test {
 protected:
  ModelConfig Config(const std::string& pipeline,
                     nlohmann::json options = nlohmann::json::object()) {
    ModelConfig c;
    c.id = absl::StrCat("test-", pipeline);
    c.pipeline = pipeline;
    c.device = "cpu";
    c.options = std::move(options);
    return c;
  }

  // Saves (with `attributes`), loads and starts an executor for `source`; `config` is kept for
  // RunContext.
  RunContext Start(const std::string& source, const ModelConfig& config,
                   const ::switchyard::testing::ModuleAttributes& attributes = nullptr) {
    const fs::path path = dir_.path() / absl::StrCat("m", models_.size(), ".pt");
    SaveScriptModule(path, source, attributes);
    auto model = runner::TorchModel::Load(path, "cpu");
    EXPECT_TRUE(model.ok()) << model.status();
    if (!model.ok()) return {};
    loaded_.push_back(*model);
    auto executor = runner::ModelExecutor::Create(*model, {});
    EXPECT_TRUE(executor.ok()) << executor.status();
    if (!executor.ok()) return {};
    models_.push_back(std::move(*executor));
    configs_.push_back(std::make_unique<ModelConfig>(config));
    return RunContext{models_.back().get(), configs_.back().get(), absl::Now() + absl::Seconds(60),
                      [] { return false; }};
  }

  TempDir dir_;
  std::vector<runner::TorchModelPtr> loaded_;
  std::vector<std::unique_ptr<runner::ModelExecutor>> models_;
  std::vector<std::unique_ptr<ModelConfig>> configs_;
};

// ---------------------------------------------------------------------------------------------

}  // namespace switchyard::orchestrator::image_pipelines_test
