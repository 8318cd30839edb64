#include "runner/onnx_converter.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "runner/converter_support.h"
#include "runner/onnx_converter_impl.h"

namespace switchyard::runner {
namespace onnx_impl {
namespace {

// TorchScript compiled from C++ has no `torch.int64` & co.: dtypes are passed as their
// c10::ScalarType numbers (4 int64, 3 int32, 6 float32, 7 float64, 11 bool). Generic helpers the
// generated `forward` calls where an ONNX rule needs the run-time rank or shape (negative axes,
// Reshape's 0, Gather with negative indices). Shapes stay dynamic.
constexpr char kHelpers[] = R"(
def _onnx_ints(self, t: Tensor) -> List[int]:
    r: List[int] = t.to(4).flatten().tolist()
    return r

def _onnx_no_ints(self) -> List[int]:
    out: List[int] = []
    return out

def _onnx_dims(self, x: Tensor, shape: List[int]) -> List[int]:
    out: List[int] = []
    for i in range(len(shape)):
        if shape[i] == 0:
            out.append(x.size(i))
        else:
            out.append(shape[i])
    return out

def _onnx_range(self, begin: int, end: int) -> List[int]:
    out: List[int] = []
    for d in range(begin, end):
        out.append(d)
    return out

def _onnx_axes(self, axes: List[int], rank: int) -> List[int]:
    out: List[int] = []
    for a in axes:
        if a < 0:
            out.append(a + rank)
        else:
            out.append(a)
    out.sort()
    return out

def _onnx_squeeze(self, x: Tensor, axes: List[int]) -> Tensor:
    dims = self._onnx_axes(axes, x.dim())
    for i in range(len(dims)):
        x = x.squeeze(dims[len(dims) - 1 - i])
    return x

def _onnx_unsqueeze(self, x: Tensor, axes: List[int]) -> Tensor:
    dims = self._onnx_axes(axes, x.dim() + len(axes))
    for d in dims:
        x = x.unsqueeze(d)
    return x

def _onnx_flatten(self, x: Tensor, axis: int) -> Tensor:
    a = axis
    if a < 0:
        a = a + x.dim()
    outer = 1
    for i in range(a):
        outer = outer * x.size(i)
    return x.reshape([outer, -1])

def _onnx_reverse(self, x: Tensor) -> List[int]:
    out: List[int] = []
    for i in range(x.dim()):
        out.append(x.dim() - 1 - i)
    return out

def _onnx_gather(self, x: Tensor, axis: int, idx: Tensor) -> Tensor:
    a = axis
    if a < 0:
        a = a + x.dim()
    i = idx.to(4)
    i = torch.where(i < 0, i + x.size(a), i)
    out = torch.index_select(x, a, i.flatten())
    shape = x.size()[:a] + i.size() + x.size()[a + 1:]
    return out.reshape(shape)
)";

}  // namespace

absl::StatusOr<torch::jit::Module> Converter::Run() {
  {
    auto bytes = convert::ReadFileLimited(path_, "ONNX model", kMaxOnnxFileBytes);
    if (!bytes.ok()) return bytes.status();
    if (!model_.ParseFromString(*bytes)) {
      return Invalid("not a valid ONNX model (protobuf parse failed: truncated or not ONNX)");
    }
  }
  SY_RETURN_IF_ERROR(CheckModel());
  SY_RETURN_IF_ERROR(CollectConstants());
  const onnx::GraphProto& g = model_.graph();
  for (int i = 0; i < g.node_size(); ++i) {
    const onnx::NodeProto& node = g.node(i);
    if (node.op_type() == "Constant" || skip_.count(i)) continue;
    SY_RETURN_IF_ERROR(Node(node));
  }
  const std::string& out_name = g.output(0).name();
  auto it = values_.find(out_name);
  if (it == values_.end()) {
    return Invalid(
        absl::StrCat("the graph output ", Quote(CommentText(out_name)), " is produced by no node"));
  }
  const std::string result = TensorExpr(it->second);
  std::string source = absl::StrCat("def forward(self, x: Tensor) -> Tensor:\n", body_,
                                    "    return ", result, "\n", kHelpers);
  return convert::BuildModule("OnnxModel", params_, 1, source, path_);
}

}  // namespace onnx_impl

absl::StatusOr<torch::jit::Module> ConvertOnnxModel(const std::filesystem::path& onnx_path,
                                                    const OnnxConvertOptions& /*options*/) {
  return convert::NoExceptions(onnx_path, [&] { return onnx_impl::Converter(onnx_path).Run(); });
}

}  // namespace switchyard::runner
