// The Livepeer AI HTTP API's body reading (livepeer_api_params.cc): Field lists read into request
// protos by their fields' types, with the reference API's 422 errors in the list's order, and
// every route's descriptor checked against its request.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/pipelines.h"
#include "gateway/api/livepeer_api_internal.h"

namespace switchyard::gateway::livepeer {
namespace {

Params Form(std::map<std::string, std::string> fields) {
  std::map<std::string, http::FormPart> form;
  for (auto& [name, value] : fields) form[name].data = value;
  return Params(std::move(form));
}

// The 422 body's [loc[1], type] pairs, in order.
std::vector<std::pair<std::string, std::string>> Errors(const Params& p) {
  const http::Response r = p.Error();
  EXPECT_EQ(r.status, 422);
  std::vector<std::pair<std::string, std::string>> out;
  const Json body = Json::parse(r.body);
  for (const auto& e : body["detail"]) {
    out.emplace_back(e["loc"][1].get<std::string>(), e["type"].get<std::string>());
  }
  return out;
}

constexpr Field kVideoFields[] = {{"model_id", true},
                                  {"image", true},
                                  {"height"},
                                  {.name = "motion_bucket_id", .min = 0},
                                  {"noise_aug_strength"},
                                  {"safety_check"},
                                  {.name = "seed", .min = kAnyInt}};

TEST(ReadFieldsTest, FormFieldsByTheirProtoTypes) {
  Params p = Form({{"model_id", "m"},
                   {"image", "png bytes"},
                   {"height", " 64 "},
                   {"motion_bucket_id", "0"},
                   {"noise_aug_strength", "0.25"},
                   {"safety_check", "yes"},
                   {"seed", "-9000000000"}});
  v1::ImageToVideoRequest r;
  ReadFields(p, kVideoFields, &r);
  ASSERT_TRUE(p.ok()) << p.Error().body;
  EXPECT_EQ(r.model_id(), "m");
  EXPECT_EQ(r.image(), "png bytes");
  EXPECT_EQ(r.height(), 64);
  ASSERT_TRUE(r.has_motion_bucket_id());
  EXPECT_EQ(r.motion_bucket_id(), 0);
  EXPECT_FLOAT_EQ(r.noise_aug_strength(), 0.25f);
  EXPECT_TRUE(r.safety_check());
  EXPECT_EQ(r.seed(), -9000000000);
  EXPECT_FALSE(r.has_fps());  // absent stays unset
}

TEST(ReadFieldsTest, ErrorsComeInTheListsOrder) {
  // An empty file counts as missing; integers keep their least value; int32 its greatest.
  Params p = Form({{"image", ""},
                   {"height", "0"},
                   {"motion_bucket_id", "2147483648"},
                   {"noise_aug_strength", "x"},
                   {"safety_check", "maybe"}});
  v1::ImageToVideoRequest r;
  ReadFields(p, kVideoFields, &r);
  ASSERT_FALSE(p.ok());
  std::vector<std::pair<std::string, std::string>> want = {{"model_id", "missing"},
                                                           {"image", "missing"},
                                                           {"height", "greater_than_equal"},
                                                           {"motion_bucket_id", "less_than_equal"},
                                                           {"noise_aug_strength", "float_parsing"},
                                                           {"safety_check", "bool_parsing"}};
  EXPECT_EQ(Errors(p), want);
}

TEST(ReadFieldsTest, JsonFieldsAreTyped) {
  constexpr Field kFields[] = {{"model_id", true}, {"prompt", true}, {"width"}, {"safety_check"}};
  Params ok(Json{{"model_id", "m"}, {"prompt", "p"}, {"width", 8.0}, {"safety_check", false}});
  v1::TextToImageRequest r;
  ReadFields(ok, kFields, &r);
  ASSERT_TRUE(ok.ok()) << ok.Error().body;
  EXPECT_EQ(r.width(), 8);
  ASSERT_TRUE(r.has_safety_check());
  EXPECT_FALSE(r.safety_check());

  Params bad(Json{{"model_id", 1}, {"width", "8"}, {"safety_check", "true"}});
  v1::TextToImageRequest r2;
  ReadFields(bad, kFields, &r2);
  std::vector<std::pair<std::string, std::string>> want = {{"model_id", "string_type"},
                                                           {"prompt", "missing"},
                                                           {"width", "int_type"},
                                                           {"safety_check", "bool_type"}};
  EXPECT_EQ(Errors(bad), want);
}

TEST(CheckFieldsTest, RefusesFieldsTheRequestCannotTake) {
  const auto& request = *v1::SegmentAnything2Request::descriptor();
  constexpr Field kOk[] = {{"model_id", true}, {"image"}, {"multimask_output"}};
  EXPECT_TRUE(CheckFields(kOk, request).ok());
  constexpr Field kTypo[] = {{"model"}};
  EXPECT_FALSE(CheckFields(kTypo, request).ok());
  constexpr Field kRepeated[] = {{"box"}};  // a JSON array in a form field: read_more's
  EXPECT_FALSE(CheckFields(kRepeated, request).ok());
  constexpr Field kMessage[] = {{"messages"}};
  EXPECT_FALSE(CheckFields(kMessage, *v1::LLMRequest::descriptor()).ok());
}

TEST(RoutesTest, OneRowPerPipelinePathEachConsistent) {
  std::set<std::string> seen;
  for (const Route& route : Routes()) {
    EXPECT_TRUE(seen.insert(route.pipeline).second) << route.pipeline;
    const pipelines::PipelineInfo* info = pipelines::Find(route.pipeline);
    ASSERT_NE(info, nullptr) << route.pipeline;
    EXPECT_TRUE(info->model_pipeline) << route.pipeline;
    EXPECT_NE(route.serve, nullptr);
    if (route.check != nullptr) {
      EXPECT_TRUE(route.check().ok()) << route.check();
    }
  }
  // Every model pipeline the Livepeer API has: all of them.
  for (const pipelines::PipelineInfo& info : pipelines::kPipelineTable) {
    if (info.model_pipeline) {
      EXPECT_EQ(seen.count(info.name), 1u) << info.name;
    }
  }
}

}  // namespace
}  // namespace switchyard::gateway::livepeer
