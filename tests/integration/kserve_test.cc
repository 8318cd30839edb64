// End-to-end tests of the KServe Open Inference Protocol through the gateway: a real gateway and
// two real orchestrators on loopback serving tiny TorchScript models generated here (and the
// ESRGAN x2 model when prepared), called with an inference.GRPCInferenceService stub on the
// gateway's port. Also unit tests of the gateway's model selector over hand-built snapshots.
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <nlohmann/json.hpp>

#include "gateway/api/inference_proxy.h"
#include "inference/open_inference_grpc.grpc.pb.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using ::grpc::StatusCode;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using InputTensor = inference::ModelInferRequest::InferInputTensor;

constexpr auto kCallTimeout = std::chrono::seconds(60);  // bound of every RPC in this file

// --- the gateway's selector ----------------------------------------------------------------------

std::shared_ptr<const gateway::NodeView> Node(const std::string& id, const std::string& pipeline,
                                              const std::string& model, node::v1::ModelState state,
                                              int in_use = 0, int capacity = 1,
                                              bool draining = false) {
  auto view = std::make_shared<gateway::NodeView>();
  view->id = id;
  view->status.set_node_id(id);
  view->status.set_draining(draining);
  auto* t = view->status.add_capabilities();
  t->set_pipeline("transcode");
  t->set_model_id("libx264");
  t->set_state(node::v1::MODEL_STATE_READY);
  auto* c = view->status.add_capabilities();
  c->set_pipeline(pipeline);
  c->set_model_id(model);
  c->set_state(state);
  c->set_in_use(in_use);
  c->set_capacity(capacity);
  return view;
}

TEST(KServeSelector, NotFoundWhenNoNodeOffersTheModel) {
  gateway::Snapshot snap;
  EXPECT_EQ(gateway::PickInferenceNode(snap, "m").status().code(), absl::StatusCode::kNotFound);
  snap.nodes.push_back(Node("a", "upscale", "other", node::v1::MODEL_STATE_READY));
  EXPECT_EQ(gateway::PickInferenceNode(snap, "m").status().code(), absl::StatusCode::kNotFound);
  // The transcode pseudo-model is not an inference model.
  EXPECT_EQ(gateway::PickInferenceNode(snap, "libx264").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(KServeSelector, AnyPipelinePrefersReadyThenLeastLoaded) {
  gateway::Snapshot snap;
  snap.nodes.push_back(Node("cold", "llm", "m", node::v1::MODEL_STATE_COLD));
  snap.nodes.push_back(Node("busy", "upscale", "m", node::v1::MODEL_STATE_READY, 2, 2));
  snap.nodes.push_back(Node("half", "text-to-image", "m", node::v1::MODEL_STATE_READY, 1, 2));
  snap.nodes.push_back(Node("idle", "upscale", "m", node::v1::MODEL_STATE_READY, 0, 4));
  auto pick = gateway::PickInferenceNode(snap, "m");
  ASSERT_TRUE(pick.ok()) << pick.status();
  EXPECT_EQ((*pick)->id, "idle");
  pick = gateway::PickInferenceNode(snap, "m", {"idle"});
  ASSERT_TRUE(pick.ok());
  EXPECT_EQ((*pick)->id, "half");
  pick = gateway::PickInferenceNode(snap, "m", {"idle", "half"});
  ASSERT_TRUE(pick.ok());
  EXPECT_EQ((*pick)->id, "busy");  // READY but full still beats cold
  pick = gateway::PickInferenceNode(snap, "m", {"idle", "half", "busy"});
  ASSERT_TRUE(pick.ok());
  EXPECT_EQ((*pick)->id, "cold");
}

TEST(KServeSelector, UnavailableWhenEveryOfferIsExcludedFailedOrDraining) {
  gateway::Snapshot snap;
  snap.nodes.push_back(Node("failed", "upscale", "m", node::v1::MODEL_STATE_FAILED));
  snap.nodes.push_back(Node("draining", "upscale", "m", node::v1::MODEL_STATE_READY, 0, 1, true));
  snap.nodes.push_back(Node("tried", "upscale", "m", node::v1::MODEL_STATE_READY));
  auto pick = gateway::PickInferenceNode(snap, "m", {"tried"});
  EXPECT_EQ(pick.status().code(), absl::StatusCode::kUnavailable);
  pick = gateway::PickInferenceNode(snap, "m");
  ASSERT_TRUE(pick.ok());
  EXPECT_EQ((*pick)->id, "tried");
}

TEST(KServeSelector, EjectedNodesAreSkipped) {
  gateway::Snapshot snap;
  snap.nodes.push_back(Node("ejected", "upscale", "m", node::v1::MODEL_STATE_READY));
  snap.nodes.push_back(Node("healthy", "upscale", "m", node::v1::MODEL_STATE_READY, 3, 4));
  auto is_ejected = [](const std::string& id) { return id == "ejected"; };
  // The idle node would win on load; ejection keeps it out.
  auto pick = gateway::PickInferenceNode(snap, "m", {}, is_ejected);
  ASSERT_TRUE(pick.ok());
  EXPECT_EQ((*pick)->id, "healthy");
  pick = gateway::PickInferenceNode(snap, "m", {}, [](const std::string&) { return true; });
  EXPECT_EQ(pick.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(pick.status().message().find("ejected"), std::string::npos) << pick.status();
}

// --- end to end through the gateway --------------------------------------------------------------

std::string RawOf(const at::Tensor& tensor) {
  at::Tensor t = tensor.contiguous();
  std::string raw(static_cast<size_t>(t.numel()) * t.element_size(), '\0');
  if (!raw.empty()) std::memcpy(raw.data(), t.data_ptr(), raw.size());
  return raw;
}

InputTensor Input(const std::string& name, const std::string& datatype,
                  std::vector<int64_t> shape) {
  InputTensor in;
  in.set_name(name);
  in.set_datatype(datatype);
  for (int64_t d : shape) in.add_shape(d);
  return in;
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  return ctx;
}

bool HaveEsrgan() { return fs::exists(ModelDir() / "esrgan-slim-x2.pt"); }

class KServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    models_dir_ = new TempDir();
    SaveScriptModule(models_dir_->path() / "pair.pt", R"(
def forward(self, x, y):
    return (x + y, x * 2)
)");
    SaveScriptModule(models_dir_->path() / "triple.pt", R"(
def forward(self, x):
    return x * 3
)");
    ClusterOptions options;
    options.orchestrators = 2;
    options.models = {};
    if (HaveEsrgan()) options.models = {"esrgan-slim-x2"};  // warm
    auto tiny = [](const std::string& id, const std::string& pipeline, const fs::path& path,
                   bool warm, nlohmann::json opts) {
      return nlohmann::json{
          {"id", id},        {"pipeline", pipeline}, {"path", path.string()},     {"warm", warm},
          {"device", "cpu"}, {"warmup_size", 0},     {"options", std::move(opts)}};
    };
    options.extra_models = {
        tiny("kpair", "upscale", models_dir_->path() / "pair.pt", true, nlohmann::json::parse(R"({
          "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]},
                     {"name": "y", "datatype": "FP32", "shape": [-1]}],
          "outputs": [{"name": "sum", "datatype": "FP32", "shape": [-1]},
                      {"name": "double", "datatype": "FP32", "shape": [-1]}]})")),
        tiny("ktriple", "llm", models_dir_->path() / "triple.pt", true, nlohmann::json::object()),
        tiny("kcold", "image-to-text", models_dir_->path() / "triple.pt", false,
             nlohmann::json::object()),
    };
    cluster_ = new LocalCluster();
    start_status_ = new absl::Status(cluster_->Start(options));
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete models_dir_;
    delete start_status_;
    cluster_ = nullptr;
    models_dir_ = nullptr;
    start_status_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(start_status_->ok()) << *start_status_;
    stub_ = inference::GRPCInferenceService::NewStub(
        grpc::CreateChannel(cluster_->gateway_address(), grpc::InsecureChannelCredentials()));
  }

  grpc::Status Infer(const inference::ModelInferRequest& req, inference::ModelInferResponse* out) {
    auto ctx = Context();
    return stub_->ModelInfer(ctx.get(), req, out);
  }

  grpc::Status Ready(const std::string& model, bool* ready) {
    inference::ModelReadyRequest req;
    req.set_name(model);
    inference::ModelReadyResponse resp;
    auto ctx = Context();
    auto st = stub_->ModelReady(ctx.get(), req, &resp);
    *ready = resp.ready();
    return st;
  }

  static inference::ModelInferRequest PairRequest() {
    inference::ModelInferRequest req;
    req.set_model_name("kpair");
    req.set_id("pair-1");
    *req.add_inputs() = Input("x", "FP32", {2, 2});
    *req.add_inputs() = Input("y", "FP32", {2, 2});
    req.add_raw_input_contents(RawOf(at::tensor({1.0f, 2.0f, 3.0f, 4.5f}).reshape({2, 2})));
    req.add_raw_input_contents(RawOf(at::tensor({0.5f, -2.0f, 10.0f, 0.0f}).reshape({2, 2})));
    return req;
  }

  static TempDir* models_dir_;
  static LocalCluster* cluster_;
  static absl::Status* start_status_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
};

TempDir* KServeTest::models_dir_ = nullptr;
LocalCluster* KServeTest::cluster_ = nullptr;
absl::Status* KServeTest::start_status_ = nullptr;

TEST_F(KServeTest, GatewayAnswersLiveReadyAndServerMetadata) {
  inference::ServerLiveResponse live;
  auto c1 = Context();
  ASSERT_TRUE(stub_->ServerLive(c1.get(), {}, &live).ok());
  EXPECT_TRUE(live.live());
  inference::ServerReadyResponse ready;
  auto c2 = Context();
  ASSERT_TRUE(stub_->ServerReady(c2.get(), {}, &ready).ok());
  EXPECT_TRUE(ready.ready());
  inference::ServerMetadataResponse meta;
  auto c3 = Context();
  ASSERT_TRUE(stub_->ServerMetadata(c3.get(), {}, &meta).ok());
  EXPECT_EQ(meta.name(), "switchyard-gateway");
}

TEST_F(KServeTest, ModelMetadataAndReadyAreForwarded) {
  inference::ModelMetadataRequest req;
  req.set_name("kpair");
  inference::ModelMetadataResponse meta;
  auto ctx = Context();
  auto st = stub_->ModelMetadata(ctx.get(), req, &meta);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(meta.name(), "kpair");
  EXPECT_THAT(meta.versions(), ElementsAre("1"));
  EXPECT_EQ(meta.platform(), "pytorch_torchscript");
  ASSERT_EQ(meta.inputs_size(), 2);
  EXPECT_EQ(meta.inputs(0).name(), "x");
  ASSERT_EQ(meta.outputs_size(), 2);
  EXPECT_EQ(meta.outputs(1).name(), "double");

  req.set_name("ktriple");
  inference::ModelMetadataResponse defaults;
  auto ctx2 = Context();
  ASSERT_TRUE(stub_->ModelMetadata(ctx2.get(), req, &defaults).ok());
  ASSERT_EQ(defaults.inputs_size(), 1);
  EXPECT_EQ(defaults.inputs(0).name(), "INPUT__0");
  EXPECT_EQ(defaults.outputs(0).name(), "OUTPUT__0");

  bool ready = false;
  ASSERT_TRUE(Ready("kpair", &ready).ok());
  EXPECT_TRUE(ready);
  EXPECT_EQ(Ready("no-such-model", &ready).error_code(), StatusCode::NOT_FOUND);
  req.set_name("no-such-model");
  auto ctx3 = Context();
  EXPECT_EQ(stub_->ModelMetadata(ctx3.get(), req, &meta).error_code(), StatusCode::NOT_FOUND);
}

TEST_F(KServeTest, ColdModelBecomesReadyAfterFirstInfer) {
  bool ready = true;
  ASSERT_TRUE(Ready("kcold", &ready).ok());
  EXPECT_FALSE(ready);
  inference::ModelInferRequest req;
  req.set_model_name("kcold");
  *req.add_inputs() = Input("INPUT__0", "FP32", {2});
  req.add_raw_input_contents(RawOf(at::tensor({1.0f, -1.0f})));
  inference::ModelInferResponse resp;
  auto st = Infer(req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.raw_output_contents(0), RawOf(at::tensor({3.0f, -3.0f})));
  // The gateway learns of the new state from the next load report (every 200 ms here).
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < end) {
    if (Ready("kcold", &ready).ok() && ready) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(ready);
}

TEST_F(KServeTest, InferFp32GivesExactOutputs) {
  inference::ModelInferResponse resp;
  auto st = Infer(PairRequest(), &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.model_name(), "kpair");
  EXPECT_EQ(resp.id(), "pair-1");
  ASSERT_EQ(resp.outputs_size(), 2);
  ASSERT_EQ(resp.raw_output_contents_size(), 2);
  EXPECT_EQ(resp.outputs(0).name(), "sum");
  EXPECT_EQ(resp.outputs(0).datatype(), "FP32");
  EXPECT_THAT(resp.outputs(0).shape(), ElementsAre(2, 2));
  EXPECT_EQ(resp.raw_output_contents(0),
            RawOf(at::tensor({1.5f, 0.0f, 13.0f, 4.5f}).reshape({2, 2})));
  EXPECT_EQ(resp.outputs(1).name(), "double");
  EXPECT_EQ(resp.raw_output_contents(1),
            RawOf(at::tensor({2.0f, 4.0f, 6.0f, 9.0f}).reshape({2, 2})));

  auto selected = PairRequest();
  selected.add_outputs()->set_name("double");
  inference::ModelInferResponse only;
  ASSERT_TRUE(Infer(selected, &only).ok());
  ASSERT_EQ(only.outputs_size(), 1);
  EXPECT_EQ(only.outputs(0).name(), "double");
}

TEST_F(KServeTest, InferInt64GivesExactOutputs) {
  inference::ModelInferRequest req;
  req.set_model_name("ktriple");
  *req.add_inputs() = Input("INPUT__0", "INT64", {3});
  for (int64_t v : {int64_t{1}, int64_t{-2}, int64_t{1} << 40}) {
    req.mutable_inputs(0)->mutable_contents()->add_int64_contents(v);
  }
  inference::ModelInferResponse resp;
  auto st = Infer(req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.outputs_size(), 1);
  EXPECT_EQ(resp.outputs(0).name(), "OUTPUT__0");
  EXPECT_EQ(resp.outputs(0).datatype(), "INT64");
  EXPECT_THAT(resp.outputs(0).shape(), ElementsAre(3));
  EXPECT_EQ(resp.raw_output_contents(0),
            RawOf(at::tensor({int64_t{3}, int64_t{-6}, int64_t{3} << 40}, at::kLong)));
}

TEST_F(KServeTest, ErrorsKeepTheirCodesThroughTheGateway) {
  inference::ModelInferResponse resp;
  auto unknown = PairRequest();
  unknown.set_model_name("no-such-model");
  EXPECT_EQ(Infer(unknown, &resp).error_code(), StatusCode::NOT_FOUND);

  auto size = PairRequest();
  size.mutable_raw_input_contents(0)->append("x");
  auto st = Infer(size, &resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("input 'x'"));

  auto count = PairRequest();
  count.mutable_inputs()->RemoveLast();
  count.mutable_raw_input_contents()->RemoveLast();
  EXPECT_EQ(Infer(count, &resp).error_code(), StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(Infer(PairRequest(), &resp).ok());

  // ModelInfer calls are jobs in the gateway's metrics, by model and the code the client got.
  HttpResult m = HttpRequest(cluster_->gateway().admin_port(), "GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  for (const char* line :
       {"switchyard_gateway_jobs_total{code=\"OK\",model=\"kpair\",pipeline=\"kserve\"}",
        "switchyard_gateway_jobs_total{code=\"INVALID_ARGUMENT\",model=\"kpair\","
        "pipeline=\"kserve\"}",
        "switchyard_gateway_jobs_total{code=\"NOT_FOUND\",model=\"no-such-model\","
        "pipeline=\"kserve\"}",
        "switchyard_gateway_job_duration_seconds_count{pipeline=\"kserve\"}"}) {
    EXPECT_NE(m.body.find(line), std::string::npos) << line;
  }
}

TEST_F(KServeTest, EsrganX2UpscalesARawTensor) {
  ASSERT_TRUE(HaveEsrgan()) << "models are not prepared in " << ModelDir()
                            << "; run scripts/prepare-models";
  inference::ModelInferRequest req;
  req.set_model_name("esrgan-slim-x2");
  *req.add_inputs() = Input("INPUT__0", "FP32", {1, 3, 4, 5});
  req.add_raw_input_contents(RawOf(at::rand({1, 3, 4, 5})));
  inference::ModelInferResponse resp;
  auto st = Infer(req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.outputs_size(), 1);
  EXPECT_EQ(resp.outputs(0).datatype(), "FP32");
  EXPECT_THAT(resp.outputs(0).shape(), ElementsAre(1, 3, 8, 10));
  EXPECT_EQ(resp.raw_output_contents(0).size(), size_t{1 * 3 * 8 * 10 * 4});
}

}  // namespace
}  // namespace switchyard::testing
