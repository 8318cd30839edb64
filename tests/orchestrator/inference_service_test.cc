// Unit tests for the orchestrator's KServe Open Inference Protocol service
// (orchestrator/serving/inference_service.h): tensor conversion both ways, config specs, and the service
// end to end on an in-process gRPC server over tiny TorchScript models saved in a temp dir.
#include "orchestrator/serving/inference_service.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include "absl/strings/str_cat.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::orchestrator {
namespace {

namespace fs = std::filesystem;
using ::switchyard::testing::SaveScriptModule;
using ::switchyard::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using InputTensor = inference::ModelInferRequest::InferInputTensor;

constexpr auto kWait = std::chrono::seconds(20);  // upper bound for every call in this file

const std::vector<std::string> kDatatypes = {"BOOL",  "INT8", "INT16", "INT32", "INT64",
                                             "UINT8", "FP16", "BF16",  "FP32",  "FP64"};

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

// Reference values 1, 0, 3, 4 (as bools: true, false, true, true) in `datatype`, shape [2, 2].
at::Tensor Reference(const std::string& datatype) {
  auto type = ScalarTypeOf(datatype);
  EXPECT_TRUE(type.ok());
  return at::tensor(std::vector<double>{1, 0, 3, 4}, at::kDouble).reshape({2, 2}).to(*type);
}

TEST(InferenceDatatypes, MapBothWays) {
  for (const auto& d : kDatatypes) {
    auto type = ScalarTypeOf(d);
    ASSERT_TRUE(type.ok()) << d;
    auto back = DatatypeOf(*type);
    ASSERT_TRUE(back.ok()) << d;
    EXPECT_EQ(*back, d);
  }
  EXPECT_EQ(*ScalarTypeOf("FP32"), at::kFloat);
  EXPECT_EQ(*ScalarTypeOf("INT64"), at::kLong);
  EXPECT_EQ(*ScalarTypeOf("UINT8"), at::kByte);
  EXPECT_EQ(ScalarTypeOf("BYTES").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ScalarTypeOf("UINT32").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(DatatypeOf(at::kComplexFloat).ok());
}

TEST(InferenceTensors, FromContentsForEachDatatype) {
  for (const auto& d : kDatatypes) {
    InputTensor in = Input("x", d, {2, 2});
    auto* c = in.mutable_contents();
    for (double v : {1.0, 0.0, 3.0, 4.0}) {
      if (d == "BOOL") c->add_bool_contents(v != 0);
      if (d == "INT8" || d == "INT16" || d == "INT32") c->add_int_contents(static_cast<int>(v));
      if (d == "INT64") c->add_int64_contents(static_cast<int64_t>(v));
      if (d == "UINT8") c->add_uint_contents(static_cast<uint32_t>(v));
      if (d == "FP16" || d == "BF16" || d == "FP32") c->add_fp32_contents(static_cast<float>(v));
      if (d == "FP64") c->add_fp64_contents(v);
    }
    auto t = TensorFromInput(in, nullptr);
    ASSERT_TRUE(t.ok()) << d << ": " << t.status();
    EXPECT_EQ(t->scalar_type(), *ScalarTypeOf(d)) << d;
    EXPECT_EQ(t->sizes().vec(), (std::vector<int64_t>{2, 2})) << d;
    EXPECT_TRUE(t->equal(Reference(d))) << d << "\n" << *t;
  }
  // Values keep their sign and width.
  InputTensor big = Input("big", "INT64", {2});
  big.mutable_contents()->add_int64_contents(int64_t{1} << 40);
  big.mutable_contents()->add_int64_contents(-7);
  auto t = TensorFromInput(big, nullptr);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)[0].item<int64_t>(), int64_t{1} << 40);
  EXPECT_EQ((*t)[1].item<int64_t>(), -7);
  InputTensor neg = Input("neg", "INT8", {1});
  neg.mutable_contents()->add_int_contents(-100);
  EXPECT_EQ(TensorFromInput(neg, nullptr)->item<int64_t>(), -100);
}

TEST(InferenceTensors, FromRawForEachDatatype) {
  for (const auto& d : kDatatypes) {
    at::Tensor ref = Reference(d);
    std::string raw = RawOf(ref);
    auto t = TensorFromInput(Input("x", d, {2, 2}), &raw);
    ASSERT_TRUE(t.ok()) << d << ": " << t.status();
    EXPECT_EQ(t->scalar_type(), ref.scalar_type()) << d;
    EXPECT_TRUE(t->equal(ref)) << d;
  }
  // Little-endian FP32 bytes of 1.0f and -2.0f.
  std::string raw("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8);
  auto t = TensorFromInput(Input("le", "FP32", {2}), &raw);
  ASSERT_TRUE(t.ok());
  EXPECT_FLOAT_EQ((*t)[0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ((*t)[1].item<float>(), -2.0f);
  // Zero-element tensors are fine.
  std::string empty;
  auto e = TensorFromInput(Input("e", "FP32", {0, 3}), &empty);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->numel(), 0);
}

TEST(InferenceTensors, ErrorsNameTheInput) {
  auto expect_invalid = [](const absl::Status& st, const std::string& what) {
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr("input 'in0'"));
    EXPECT_THAT(std::string(st.message()), HasSubstr(what));
  };
  {
    InputTensor in = Input("in0", "FP32", {2, 2});
    in.mutable_contents()->add_fp32_contents(1);
    expect_invalid(TensorFromInput(in, nullptr).status(), "needs 4 values");
  }
  {
    std::string raw(15, '\0');
    expect_invalid(TensorFromInput(Input("in0", "FP32", {2, 2}), &raw).status(), "16 bytes");
  }
  {
    std::string raw(4, '\0');
    expect_invalid(TensorFromInput(Input("in0", "FP32", {-1}), &raw).status(), "negative");
  }
  {
    InputTensor in = Input("in0", "FP32", {1});
    in.mutable_contents()->add_fp32_contents(1);
    std::string raw(4, '\0');
    expect_invalid(TensorFromInput(in, &raw).status(), "both contents and raw");
  }
  {
    InputTensor in = Input("in0", "BYTES", {1});
    expect_invalid(TensorFromInput(in, nullptr).status(), "BYTES");
  }
  {
    InputTensor in = Input("in0", "FP32", {1});
    in.mutable_contents()->add_int_contents(1);  // wrong field for FP32
    expect_invalid(TensorFromInput(in, nullptr).status(), "FP32");
  }
  {
    InputTensor in = Input("in0", "INT64", {int64_t{1} << 30, int64_t{1} << 30});
    expect_invalid(TensorFromInput(in, nullptr).status(), "too large");
  }
}

TEST(InferenceTensors, RequestLevelChecks) {
  inference::ModelInferRequest req;
  EXPECT_EQ(TensorsFromRequest(req).status().code(), absl::StatusCode::kInvalidArgument);
  *req.add_inputs() = Input("a", "INT32", {1});
  *req.add_inputs() = Input("b", "INT32", {1});
  req.add_raw_input_contents(std::string(4, '\0'));  // one raw entry for two inputs
  auto st = TensorsFromRequest(req).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("raw_input_contents"));
  req.add_raw_input_contents(RawOf(at::tensor({7}, at::kInt)));
  auto ok = TensorsFromRequest(req);
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[1].item<int>(), 7);
}

TEST(InferenceSpecs, DefaultsAndConfigured) {
  auto d = TensorSpecsFromOptions(nlohmann::json::object(), "inputs", "INPUT__0");
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->size(), 1u);
  EXPECT_EQ((*d)[0].name, "INPUT__0");
  EXPECT_EQ((*d)[0].datatype, "FP32");
  EXPECT_THAT((*d)[0].shape, ElementsAre(-1));
  auto options = nlohmann::json::parse(
      R"({"outputs": [{"name": "y", "datatype": "INT64", "shape": [1, -1]}, {"name": "z"}]})");
  auto c = TensorSpecsFromOptions(options, "outputs", "OUTPUT__0");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->size(), 2u);
  EXPECT_EQ((*c)[0].datatype, "INT64");
  EXPECT_THAT((*c)[0].shape, ElementsAre(1, -1));
  EXPECT_EQ((*c)[1].datatype, "FP32");
  for (const char* bad : {R"({"inputs": {}})", R"({"inputs": [{"datatype": "FP32"}]})",
                          R"({"inputs": [{"name": "x", "datatype": "STRING"}]})",
                          R"({"inputs": [{"name": "x", "shape": [-2]}]})"}) {
    EXPECT_FALSE(TensorSpecsFromOptions(nlohmann::json::parse(bad), "inputs", "I").ok()) << bad;
  }
}

TEST(InferenceSpecs, MatchInputsChecksCountTypeShapeAndOrders) {
  std::vector<TensorSpec> specs = {{"x", "FP32", {-1, 2}}, {"y", "INT64", {-1}}};
  inference::ModelInferRequest req;
  *req.add_inputs() = Input("y", "INT64", {3});
  *req.add_inputs() = Input("x", "FP32", {1, 2});
  std::vector<at::Tensor> tensors = {at::zeros({3}, at::kLong), at::ones({1, 2}, at::kFloat)};
  auto m = MatchInputs(req, tensors, specs);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)[0].scalar_type(), at::kFloat);  // reordered by name
  EXPECT_EQ((*m)[1].scalar_type(), at::kLong);

  auto count = MatchInputs(req, {tensors[0]}, specs).status();
  EXPECT_EQ(count.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(count.message()), HasSubstr("takes 2 input"));

  std::vector<at::Tensor> wrong_type = {at::zeros({3}, at::kInt), tensors[1]};
  auto type = MatchInputs(req, wrong_type, specs).status();
  EXPECT_EQ(type.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(type.message()), HasSubstr("input 'y'"));

  std::vector<at::Tensor> wrong_shape = {tensors[0], at::ones({1, 3}, at::kFloat)};
  auto shape = MatchInputs(req, wrong_shape, specs).status();
  EXPECT_EQ(shape.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(shape.message()), HasSubstr("input 'x'"));
}

TEST(InferenceOutputs, FromResultAndFillResponse) {
  at::Tensor a = at::tensor({1.5f, -2.0f}, at::kFloat);
  at::Tensor b = at::tensor({int64_t{7}, int64_t{8}, int64_t{9}}, at::kLong).reshape({1, 3});
  auto one = TensorsFromResult(c10::IValue(a));
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->size(), 1u);
  auto tuple = TensorsFromResult(c10::ivalue::Tuple::create({a, b}));
  ASSERT_TRUE(tuple.ok());
  EXPECT_EQ(tuple->size(), 2u);
  c10::List<at::Tensor> list({a, b, a});
  auto from_list = TensorsFromResult(c10::IValue(list));
  ASSERT_TRUE(from_list.ok());
  EXPECT_EQ(from_list->size(), 3u);
  EXPECT_EQ(TensorsFromResult(c10::IValue(std::string("no"))).status().code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(
      TensorsFromResult(c10::ivalue::Tuple::create({a, c10::IValue(int64_t{3})})).status().code(),
      absl::StatusCode::kInternal);

  EXPECT_THAT(OutputNames({}, 2), ElementsAre("OUTPUT__0", "OUTPUT__1"));
  EXPECT_THAT(OutputNames({{"sum", "FP32", {-1}}}, 2), ElementsAre("sum", "OUTPUT__1"));

  inference::ModelInferRequest req;
  req.set_model_name("m");
  req.set_id("req-1");
  inference::ModelInferResponse resp;
  ASSERT_TRUE(FillResponse(req, {a, b}, {"A", "B"}, &resp).ok());
  EXPECT_EQ(resp.model_name(), "m");
  EXPECT_EQ(resp.model_version(), "1");
  EXPECT_EQ(resp.id(), "req-1");
  ASSERT_EQ(resp.outputs_size(), 2);
  ASSERT_EQ(resp.raw_output_contents_size(), 2);
  EXPECT_EQ(resp.outputs(0).name(), "A");
  EXPECT_EQ(resp.outputs(0).datatype(), "FP32");
  EXPECT_THAT(resp.outputs(0).shape(), ElementsAre(2));
  EXPECT_EQ(resp.raw_output_contents(0), RawOf(a));
  EXPECT_EQ(resp.outputs(1).datatype(), "INT64");
  EXPECT_THAT(resp.outputs(1).shape(), ElementsAre(1, 3));
  EXPECT_EQ(resp.raw_output_contents(1), RawOf(b));

  // Selection by name, in the requested order; non-contiguous tensors are packed.
  req.add_outputs()->set_name("B");
  inference::ModelInferResponse selected;
  ASSERT_TRUE(FillResponse(req, {a, b.t()}, {"A", "B"}, &selected).ok());
  ASSERT_EQ(selected.outputs_size(), 1);
  EXPECT_EQ(selected.outputs(0).name(), "B");
  EXPECT_THAT(selected.outputs(0).shape(), ElementsAre(3, 1));
  EXPECT_EQ(selected.raw_output_contents(0), RawOf(b.t().contiguous()));

  req.add_outputs()->set_name("C");
  inference::ModelInferResponse unknown;
  auto st = FillResponse(req, {a, b}, {"A", "B"}, &unknown);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("'C'"));

  inference::ModelInferRequest plain;
  inference::ModelInferResponse complex;
  EXPECT_EQ(FillResponse(plain, {at::zeros({1}, at::kComplexFloat)}, {"Z"}, &complex).code(),
            absl::StatusCode::kInternal);
}

TEST(InferenceLimits, DefaultsFollowThePipelineUnlessTheModelSetsOne) {
  ModelConfig image;
  image.pipeline = "upscale";
  image.max_input_pixels = 1000;
  EXPECT_EQ(MaxInputElements(image), 4000);  // an RGBA image at the pixel limit
  ModelConfig text = image;
  text.pipeline = "llm";
  EXPECT_EQ(MaxInputElements(text), kDefaultMaxInputElements);
  text.max_input_elements = 7;
  EXPECT_EQ(MaxInputElements(text), 7);
}

TEST(InferenceLimits, CheckInputSizesNamesTheInputItsSizeAndTheLimit) {
  inference::ModelInferRequest req;
  *req.add_inputs() = Input("a", "FP32", {2, 3});
  *req.add_inputs() = Input("b", "FP64", {5});
  EXPECT_TRUE(CheckInputSizes(req, 11).ok());
  absl::Status st = CheckInputSizes(req, 10);  // 6 + 5 > 10: b takes the call over
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("input 'b'"));
  EXPECT_THAT(st.message(), HasSubstr("5 elements (40 bytes of FP64)"));
  EXPECT_THAT(st.message(), HasSubstr("after 6 in earlier inputs"));
  EXPECT_THAT(st.message(), HasSubstr("at most 10 input elements"));
  // Shapes whose product overflows int64 are over the limit, not wrapped around under it.
  inference::ModelInferRequest huge;
  *huge.add_inputs() = Input("h", "UINT8", {int64_t{1} << 40, int64_t{1} << 40, 0});
  EXPECT_TRUE(CheckInputSizes(huge, 10).ok());  // a zero dimension: no elements at all
  huge.mutable_inputs(0)->set_shape(2, 1 << 20);
  st = CheckInputSizes(huge, int64_t{1} << 24);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("more than"));
  huge.mutable_inputs(0)->set_shape(2, -4);
  EXPECT_THAT(CheckInputSizes(huge, 10).message(), HasSubstr("negative dimension"));
}

// --- the service end to end --------------------------------------------------------------------

constexpr const char* kPair = R"(
def forward(self, x, y):
    return (x + y, x * 2)
)";
constexpr const char* kIdentity = R"(
def forward(self, x):
    return x
)";
constexpr const char* kBroken = R"(
def forward(self, x):
    return x.view(-1, 7)
)";

class InferenceServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SaveScriptModule(dir_.path() / "pair.pt", kPair);
    SaveScriptModule(dir_.path() / "identity.pt", kIdentity);
    SaveScriptModule(dir_.path() / "broken.pt", kBroken);
    std::vector<ModelConfig> configs;
    ModelConfig pair;
    pair.id = "pair";
    pair.pipeline = "upscale";
    pair.path = dir_.path() / "pair.pt";
    pair.device = "cpu";
    pair.warmup_size = 0;
    pair.price_per_unit = 0.5;
    pair.options = nlohmann::json::parse(R"({
      "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]},
                 {"name": "y", "datatype": "FP32", "shape": [-1]}],
      "outputs": [{"name": "sum", "datatype": "FP32", "shape": [-1]},
                  {"name": "double", "datatype": "FP32", "shape": [-1]}]})");
    configs.push_back(pair);
    ModelConfig identity = pair;
    identity.id = "identity";
    identity.pipeline = "llm";
    identity.path = dir_.path() / "identity.pt";
    identity.options = nlohmann::json::object();
    configs.push_back(identity);
    ModelConfig broken = identity;
    broken.id = "broken";
    broken.path = dir_.path() / "broken.pt";
    configs.push_back(broken);
    ModelConfig small = identity;
    small.id = "small";
    small.max_input_elements = 10;
    configs.push_back(small);
    models_ = std::make_unique<ModelManager>(configs, &board_);
    service_ = std::make_unique<InferenceService>(
        models_.get(), [this] { return ready_.load(); }, &board_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.SetMaxReceiveMessageSize(64 << 20);  // room for inputs over a model's element limit
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port, 0);
    stub_ = inference::GRPCInferenceService::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + kWait);
    return ctx;
  }

  grpc::Status Infer(const inference::ModelInferRequest& req, inference::ModelInferResponse* out) {
    auto ctx = Context();
    return stub_->ModelInfer(ctx.get(), req, out);
  }

  bool Ready(const std::string& model, grpc::Status* status = nullptr) {
    inference::ModelReadyRequest req;
    req.set_name(model);
    inference::ModelReadyResponse resp;
    auto ctx = Context();
    auto st = stub_->ModelReady(ctx.get(), req, &resp);
    if (status != nullptr) *status = st;
    return st.ok() && resp.ready();
  }

  static inference::ModelInferRequest PairRequest() {
    inference::ModelInferRequest req;
    req.set_model_name("pair");
    *req.add_inputs() = Input("x", "FP32", {3});
    *req.add_inputs() = Input("y", "FP32", {3});
    req.add_raw_input_contents(RawOf(at::tensor({1.0f, 2.0f, 3.5f})));
    req.add_raw_input_contents(RawOf(at::tensor({10.0f, 20.0f, 30.0f})));
    return req;
  }

  TempDir dir_;
  StatusBoard board_;
  std::atomic<bool> ready_{true};
  std::unique_ptr<ModelManager> models_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
};

TEST_F(InferenceServiceTest, ServerLiveReadyAndMetadata) {
  {
    inference::ServerLiveResponse resp;
    auto ctx = Context();
    ASSERT_TRUE(stub_->ServerLive(ctx.get(), {}, &resp).ok());
    EXPECT_TRUE(resp.live());
  }
  for (bool ready : {true, false}) {
    ready_ = ready;
    inference::ServerReadyResponse resp;
    auto ctx = Context();
    ASSERT_TRUE(stub_->ServerReady(ctx.get(), {}, &resp).ok());
    EXPECT_EQ(resp.ready(), ready);
  }
  inference::ServerMetadataResponse meta;
  auto ctx = Context();
  ASSERT_TRUE(stub_->ServerMetadata(ctx.get(), {}, &meta).ok());
  EXPECT_EQ(meta.name(), "switchyard-orchestrator");
  EXPECT_EQ(meta.version(), "0.1.0");
  EXPECT_EQ(meta.extensions_size(), 0);
}

TEST_F(InferenceServiceTest, ModelMetadataFromOptionsOrDefaults) {
  inference::ModelMetadataRequest req;
  req.set_name("pair");
  inference::ModelMetadataResponse pair;
  auto ctx = Context();
  ASSERT_TRUE(stub_->ModelMetadata(ctx.get(), req, &pair).ok());
  EXPECT_EQ(pair.name(), "pair");
  EXPECT_THAT(pair.versions(), ElementsAre("1"));
  EXPECT_EQ(pair.platform(), "pytorch_torchscript");
  ASSERT_EQ(pair.inputs_size(), 2);
  EXPECT_EQ(pair.inputs(1).name(), "y");
  ASSERT_EQ(pair.outputs_size(), 2);
  EXPECT_EQ(pair.outputs(1).name(), "double");

  req.set_name("identity");
  inference::ModelMetadataResponse identity;
  auto ctx2 = Context();
  ASSERT_TRUE(stub_->ModelMetadata(ctx2.get(), req, &identity).ok());
  ASSERT_EQ(identity.inputs_size(), 1);
  EXPECT_EQ(identity.inputs(0).name(), "INPUT__0");
  EXPECT_EQ(identity.inputs(0).datatype(), "FP32");
  EXPECT_THAT(identity.inputs(0).shape(), ElementsAre(-1));
  ASSERT_EQ(identity.outputs_size(), 1);
  EXPECT_EQ(identity.outputs(0).name(), "OUTPUT__0");

  req.set_name("nope");
  inference::ModelMetadataResponse none;
  auto ctx3 = Context();
  EXPECT_EQ(stub_->ModelMetadata(ctx3.get(), req, &none).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(InferenceServiceTest, InferPairReturnsBothOutputsAndLoadsTheColdModel) {
  EXPECT_FALSE(Ready("pair"));  // cold until first use
  inference::ModelInferResponse resp;
  auto st = Infer(PairRequest(), &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(Ready("pair"));
  EXPECT_EQ(resp.model_name(), "pair");
  ASSERT_EQ(resp.outputs_size(), 2);
  ASSERT_EQ(resp.raw_output_contents_size(), 2);
  EXPECT_EQ(resp.outputs(0).name(), "sum");
  EXPECT_EQ(resp.outputs(0).datatype(), "FP32");
  EXPECT_THAT(resp.outputs(0).shape(), ElementsAre(3));
  EXPECT_EQ(resp.raw_output_contents(0), RawOf(at::tensor({11.0f, 22.0f, 33.5f})));
  EXPECT_EQ(resp.outputs(1).name(), "double");
  EXPECT_EQ(resp.raw_output_contents(1), RawOf(at::tensor({2.0f, 4.0f, 7.0f})));

  // Inputs are matched by name; outputs selected by name.
  inference::ModelInferRequest swapped = PairRequest();
  swapped.mutable_inputs()->SwapElements(0, 1);
  swapped.mutable_raw_input_contents()->SwapElements(0, 1);
  swapped.add_outputs()->set_name("double");
  inference::ModelInferResponse only;
  ASSERT_TRUE(Infer(swapped, &only).ok());
  ASSERT_EQ(only.outputs_size(), 1);
  EXPECT_EQ(only.outputs(0).name(), "double");
  EXPECT_EQ(only.raw_output_contents(0), RawOf(at::tensor({2.0f, 4.0f, 7.0f})));
}

TEST_F(InferenceServiceTest, InferInt64FromContentsThroughIdentity) {
  inference::ModelInferRequest req;
  req.set_model_name("identity");
  *req.add_inputs() = Input("INPUT__0", "INT64", {2, 2});
  for (int64_t v : {int64_t{5}, int64_t{-6}, int64_t{1} << 40, int64_t{0}}) {
    req.mutable_inputs(0)->mutable_contents()->add_int64_contents(v);
  }
  inference::ModelInferResponse resp;
  auto st = Infer(req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(resp.outputs_size(), 1);
  EXPECT_EQ(resp.outputs(0).name(), "OUTPUT__0");
  EXPECT_EQ(resp.outputs(0).datatype(), "INT64");
  EXPECT_THAT(resp.outputs(0).shape(), ElementsAre(2, 2));
  EXPECT_EQ(resp.raw_output_contents(0),
            RawOf(at::tensor({int64_t{5}, int64_t{-6}, int64_t{1} << 40, int64_t{0}}, at::kLong)));
}

TEST_F(InferenceServiceTest, InferReportsTheInputElementsAndThePriceInTheParameters) {
  inference::ModelInferResponse resp;
  auto st = Infer(PairRequest(), &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  // Two inputs of 3 elements (docs/metering.md), at the model's price.
  ASSERT_EQ(resp.parameters().count("switchyard_units"), 1u);
  EXPECT_EQ(resp.parameters().at("switchyard_units").int64_param(), 6);
  ASSERT_EQ(resp.parameters().count("switchyard_price_per_unit"), 1u);
  EXPECT_EQ(resp.parameters().at("switchyard_price_per_unit").double_param(), 0.5);

  // The test-only misreport is added to the count.
  service_->set_test_inflate_units(1000);
  inference::ModelInferRequest req;
  req.set_model_name("identity");
  *req.add_inputs() = Input("INPUT__0", "INT64", {2, 2});
  for (int64_t v : {1, 2, 3, 4}) req.mutable_inputs(0)->mutable_contents()->add_int64_contents(v);
  inference::ModelInferResponse inflated;
  st = Infer(req, &inflated);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(inflated.parameters().at("switchyard_units").int64_param(), 4 + 1000);
}

TEST_F(InferenceServiceTest, ErrorCodes) {
  grpc::Status status;
  EXPECT_FALSE(Ready("nope", &status));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);

  inference::ModelInferResponse resp;
  inference::ModelInferRequest unknown = PairRequest();
  unknown.set_model_name("nope");
  EXPECT_EQ(Infer(unknown, &resp).error_code(), grpc::StatusCode::NOT_FOUND);

  inference::ModelInferRequest version = PairRequest();
  version.set_model_version("2");
  EXPECT_EQ(Infer(version, &resp).error_code(), grpc::StatusCode::NOT_FOUND);

  inference::ModelInferRequest size = PairRequest();
  size.mutable_raw_input_contents(1)->pop_back();
  auto st = Infer(size, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("input 'y'"));

  inference::ModelInferRequest count = PairRequest();
  count.mutable_inputs()->RemoveLast();
  count.mutable_raw_input_contents()->RemoveLast();
  EXPECT_EQ(Infer(count, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // A model without declared inputs: libtorch's argument-count error is INVALID_ARGUMENT too.
  inference::ModelInferRequest extra = PairRequest();
  extra.set_model_name("identity");
  st = Infer(extra, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();

  inference::ModelInferRequest wrong_output = PairRequest();
  wrong_output.add_outputs()->set_name("product");
  EXPECT_EQ(Infer(wrong_output, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // The model itself fails: INTERNAL with libtorch's message.
  inference::ModelInferRequest broken;
  broken.set_model_name("broken");
  *broken.add_inputs() = Input("INPUT__0", "FP32", {3});
  broken.add_raw_input_contents(RawOf(at::zeros({3})));
  st = Infer(broken, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_THAT(st.error_message(), HasSubstr("shape"));
}

// Regression (issue 18): ModelInfer ran any input size the message limit let through, whatever
// the model's own limits (an upscale model's pixels); now each model has an element limit.
TEST_F(InferenceServiceTest, InputsOverTheModelsElementLimitAreRefusedBeforeItRuns) {
  inference::ModelInferResponse resp;
  // "pair" is an upscale model with the default 512 x 512 pixels: 4 x 262144 elements a call.
  inference::ModelInferRequest big;
  big.set_model_name("pair");
  *big.add_inputs() = Input("x", "FP32", {600000});
  *big.add_inputs() = Input("y", "FP32", {600000});
  big.add_raw_input_contents(RawOf(at::zeros({600000})));
  big.add_raw_input_contents(RawOf(at::zeros({600000})));
  auto st = Infer(big, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_THAT(st.error_message(), HasSubstr("input 'y'"));
  EXPECT_THAT(st.error_message(), HasSubstr("600000 elements (2400000 bytes of FP32)"));
  EXPECT_THAT(st.error_message(), HasSubstr("at most 1048576 input elements"));
  EXPECT_THAT(st.error_message(), HasSubstr("max_input_elements"));
  // A model's own max_input_elements: 10 pass, 11 do not.
  inference::ModelInferRequest small;
  small.set_model_name("small");
  *small.add_inputs() = Input("INPUT__0", "FP32", {10});
  small.add_raw_input_contents(RawOf(at::ones({10})));
  EXPECT_TRUE(Infer(small, &resp).ok());
  small.mutable_inputs(0)->set_shape(0, 11);
  *small.mutable_raw_input_contents(0) = RawOf(at::ones({11}));
  st = Infer(small, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(st.error_message(), HasSubstr("input 'INPUT__0'"));
  EXPECT_THAT(st.error_message(), HasSubstr("at most 10"));
  EXPECT_TRUE(Infer(PairRequest(), &resp).ok());
}

}  // namespace
}  // namespace switchyard::orchestrator
