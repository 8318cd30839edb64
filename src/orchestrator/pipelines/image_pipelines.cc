#include "orchestrator/pipelines/image_pipelines.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <span>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/float_tensor.h"
#include "common/media/ffmpeg_util.h"
#include "common/pipelines.h"
#include "orchestrator/pipelines/ocr.h"
#include "orchestrator/pipelines/tensor_image.h"
#include "orchestrator/pipelines/warmup.h"
#include "runner/ocr_bundle.h"

namespace switchyard::orchestrator {
namespace {

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::StatusOr<media::RgbImage> DecodeInput(const std::string& image, const ModelConfig& model) {
  if (image.empty()) return Invalid("image is required (PNG or JPEG)");
  auto decoded = media::DecodeImage(image, model.max_input_pixels);
  if (!decoded.ok()) {
    return absl::Status(decoded.status().code(),
                        absl::StrCat("image: ", decoded.status().message()));
  }
  return decoded;
}

absl::StatusOr<c10::IValue> RunModel(const RunContext& ctx, runner::ModelExecutor::Inputs inputs,
                                     const std::string& method = "") {
  runner::CancelToken cancel;
  auto watch = runner::WatchForCancel(ctx.is_cancelled, cancel);
  runner::RunOptions options;
  options.method = method;
  return ctx.executor->Run(std::move(inputs), ctx.deadline, cancel, options);
}

std::string Dim(int64_t v, const char* name) { return v >= 0 ? absl::StrCat(v) : name; }

std::string DescribeTensor(const at::Tensor& t) {
  return absl::StrCat(std::string(c10::toString(t.scalar_type())), " tensor of shape ",
                      c10::str(t.sizes()));
}

std::string DescribeValue(const c10::IValue& v) {
  if (v.isTensor()) return DescribeTensor(v.toTensor());
  return absl::StrCat("a value of type ", v.type()->str());
}

struct DictGuard {
  AVDictionary* dict = nullptr;
  DictGuard() = default;
  DictGuard(const DictGuard&) = delete;
  DictGuard& operator=(const DictGuard&) = delete;
  ~DictGuard() { av_dict_free(&dict); }
};

absl::Status AvError(const char* what, int ret) {
  return absl::InternalError(
      absl::StrCat("image-to-video: ", what, ": ", media::AvErrorString(ret)));
}

}  // namespace

at::Tensor ImageToTensor(const media::RgbImage& image) { return Rgb24ToTensor(image); }

absl::StatusOr<at::Tensor> CheckImageBatch(const c10::IValue& value, const std::string& model_id,
                                           int64_t n, int64_t height, int64_t width) {
  const std::string expected =
      absl::StrCat("float32 [", Dim(n, "N"), ", 3, ", Dim(height, "H"), ", ", Dim(width, "W"), "]");
  bool ok = value.isTensor();
  if (ok) {
    const at::Tensor& t = value.toTensor();
    ok = t.scalar_type() == at::kFloat && t.dim() == 4 && t.size(0) > 0 && t.size(1) == 3 &&
         t.size(2) > 0 && t.size(3) > 0 && (n < 0 || t.size(0) == n) &&
         (height < 0 || t.size(2) == height) && (width < 0 || t.size(3) == width);
  }
  if (!ok) {
    return absl::InternalError(absl::StrCat("model '", model_id, "' returned ",
                                            DescribeValue(value), ", expected ", expected));
  }
  return value.toTensor();
}

absl::StatusOr<std::vector<EncodedImage>> EncodePngs(const at::Tensor& images) {
  std::vector<EncodedImage> out;
  for (int64_t i = 0; i < images.size(0); ++i) {
    auto img = TensorToImage(images[i]);
    if (!img.ok()) return img.status();
    auto png = media::EncodePng(*img);
    if (!png.ok()) return png.status();
    out.push_back(EncodedImage{std::move(*png), img->width, img->height});
  }
  return out;
}

std::string TensorToJson(const at::Tensor& tensor, bool as_binary) {
  const at::Tensor t = tensor.to(at::kFloat).contiguous();
  std::string out;
  AppendFloatsAsJson(t.data_ptr<float>(), std::span<const int64_t>(t.sizes().data(), t.dim()),
                     as_binary, &out);
  return out;
}

void TensorToPacked(const at::Tensor& tensor, v1::FloatTensor* out) {
  const at::Tensor t = tensor.to(at::kFloat).contiguous();
  PackFloatTensor(t.data_ptr<float>(), std::span<const int64_t>(t.sizes().data(), t.dim()), out);
}

absl::StatusOr<std::string> EncodeMp4(const at::Tensor& frames, int fps, int encoder_threads) {
  if (frames.dim() != 4 || frames.size(0) < 1 || frames.size(1) != 3) {
    return Invalid(absl::StrCat("frames must be [F, 3, H, W], got ", c10::str(frames.sizes())));
  }
  const int64_t count = frames.size(0);
  const int h = static_cast<int>(frames.size(2)), w = static_cast<int>(frames.size(3));
  if (h < 2 || w < 2 || h % 2 != 0 || w % 2 != 0) {
    return Invalid(absl::StrCat("video frames must have even sizes for yuv420p, got ", w, "x", h));
  }
  if (fps < 1 || fps > 1000) return Invalid(absl::StrCat("fps must be 1..1000, got ", fps));
  auto converted = TensorsToRgb24(frames);
  if (!converted.ok()) return converted.status();
  const at::Tensor& rgb = *converted;  // [F, H, W, 3]

  media::InitFfmpeg();
  std::string sink;
  auto muxer = media::OpenMemoryMuxer("mp4", &sink);
  if (!muxer.ok()) return muxer.status();
  AVFormatContext* fmt = (*muxer)->format.get();

  const AVCodec* codec = avcodec_find_encoder_by_name("libx264");
  if (codec == nullptr) return absl::InternalError("the libx264 encoder is not available");
  media::AvCodecContextPtr enc(avcodec_alloc_context3(codec));
  if (enc == nullptr) return absl::ResourceExhaustedError("cannot allocate an encoder");
  enc->width = w;
  enc->height = h;
  enc->pix_fmt = AV_PIX_FMT_YUV420P;
  enc->time_base = AVRational{1, fps};
  enc->framerate = AVRational{fps, 1};
  enc->gop_size = std::max(1, fps * 2);
  enc->max_b_frames = 0;
  enc->thread_count = std::clamp(encoder_threads, 1, 16);
  if ((fmt->oformat->flags & AVFMT_GLOBALHEADER) != 0) {
    enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  }
  {
    DictGuard opts;
    av_dict_set(&opts.dict, "preset", "veryfast", 0);
    const int ret = avcodec_open2(enc.get(), codec, &opts.dict);
    if (ret < 0) return AvError("cannot open libx264", ret);
  }
  AVStream* stream = avformat_new_stream(fmt, nullptr);  // owned by fmt
  if (stream == nullptr) return absl::ResourceExhaustedError("cannot allocate a stream");
  int ret = avcodec_parameters_from_context(stream->codecpar, enc.get());
  if (ret < 0) return AvError("codec parameters", ret);
  stream->time_base = enc->time_base;
  stream->avg_frame_rate = AVRational{fps, 1};
  {
    DictGuard opts;
    av_dict_set(&opts.dict, "movflags", "frag_keyframe+empty_moov+default_base_moof", 0);
    ret = avformat_write_header(fmt, &opts.dict);
    if (ret < 0) return AvError("cannot write the MP4 header", ret);
  }

  media::SwsContextPtr sws(sws_getContext(w, h, AV_PIX_FMT_RGB24, w, h, AV_PIX_FMT_YUV420P,
                                          SWS_BILINEAR, nullptr, nullptr, nullptr));
  media::AvFramePtr frame(av_frame_alloc());
  media::AvPacketPtr packet(av_packet_alloc());
  if (sws == nullptr || frame == nullptr || packet == nullptr) {
    return absl::ResourceExhaustedError("cannot allocate the scaler, frame or packet");
  }
  frame->format = AV_PIX_FMT_YUV420P;
  frame->width = w;
  frame->height = h;
  ret = av_frame_get_buffer(frame.get(), 0);
  if (ret < 0) return AvError("frame buffer", ret);

  auto drain = [&]() -> absl::Status {
    while (true) {
      int r = avcodec_receive_packet(enc.get(), packet.get());
      if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return absl::OkStatus();
      if (r < 0) return AvError("encoding", r);
      av_packet_rescale_ts(packet.get(), enc->time_base, stream->time_base);
      packet->stream_index = stream->index;
      r = av_interleaved_write_frame(fmt, packet.get());  // takes the packet's data
      if (r < 0) return AvError("muxing", r);
    }
  };

  const uint8_t* base = rgb.data_ptr<uint8_t>();
  const int src_stride[1] = {3 * w};
  for (int64_t i = 0; i < count; ++i) {
    ret = av_frame_make_writable(frame.get());
    if (ret < 0) return AvError("frame", ret);
    const uint8_t* src[1] = {base + i * static_cast<int64_t>(h) * w * 3};
    sws_scale(sws.get(), src, src_stride, 0, h, frame->data, frame->linesize);
    frame->pts = i;
    ret = avcodec_send_frame(enc.get(), frame.get());
    if (ret < 0) return AvError("encoding", ret);
    if (auto st = drain(); !st.ok()) return st;
  }
  ret = avcodec_send_frame(enc.get(), nullptr);
  if (ret < 0) return AvError("flushing the encoder", ret);
  if (auto st = drain(); !st.ok()) return st;
  ret = av_write_trailer(fmt);
  if (ret < 0) return AvError("cannot finish the MP4", ret);
  avio_flush(fmt->pb);
  muxer->reset();  // nothing may write to `sink` after this
  return sink;
}

namespace {

// Runs one prompt's forward pass and appends its images (height/width -1: any size) to `result`.
absl::Status RunPrompt(const RunContext& ctx, runner::ModelExecutor::Inputs inputs,
                       int images_per_prompt, int height, int width, ImagesResult* result) {
  auto out = RunModel(ctx, std::move(inputs));
  if (!out.ok()) return out.status();
  auto images = CheckImageBatch(*out, ctx.model->id, images_per_prompt, height, width);
  if (!images.ok()) return images.status();
  auto pngs = EncodePngs(*images);
  if (!pngs.ok()) return pngs.status();
  for (auto& png : *pngs) {
    result->output_pixels += static_cast<int64_t>(png.width) * png.height;
    result->images.push_back(std::move(png));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ImagesResult> RunTextToImage(const RunContext& ctx,
                                            const TextToImageParams& params) {
  ImagesResult result;
  for (const std::string& prompt : params.prompts) {
    runner::ModelExecutor::Inputs inputs{
        c10::IValue(prompt),
        c10::IValue(params.negative_prompt),
        c10::IValue(params.seed),
        c10::IValue(static_cast<int64_t>(params.num_inference_steps)),
        c10::IValue(params.guidance_scale),
        c10::IValue(static_cast<int64_t>(params.height)),
        c10::IValue(static_cast<int64_t>(params.width)),
        c10::IValue(static_cast<int64_t>(params.num_images_per_prompt))};
    if (auto st = RunPrompt(ctx, std::move(inputs), params.num_images_per_prompt, params.height,
                            params.width, &result);
        !st.ok()) {
      return st;
    }
  }
  return result;
}

absl::StatusOr<ImagesResult> RunImageToImage(const RunContext& ctx, const std::string& image,
                                             const ImageToImageParams& params) {
  auto decoded = DecodeInput(image, *ctx.model);
  if (!decoded.ok()) return decoded.status();
  const at::Tensor input = ImageToTensor(*decoded);
  ImagesResult result;
  result.input_width = decoded->width;
  result.input_height = decoded->height;
  for (const std::string& prompt : params.prompts) {
    runner::ModelExecutor::Inputs inputs{
        c10::IValue(input),
        c10::IValue(prompt),
        c10::IValue(params.negative_prompt),
        c10::IValue(params.seed),
        c10::IValue(params.strength),
        c10::IValue(params.guidance_scale),
        c10::IValue(params.image_guidance_scale),
        c10::IValue(static_cast<int64_t>(params.num_inference_steps)),
        c10::IValue(static_cast<int64_t>(params.num_images_per_prompt))};
    if (auto st = RunPrompt(ctx, std::move(inputs), params.num_images_per_prompt, -1, -1, &result);
        !st.ok()) {
      return st;
    }
  }
  return result;
}

absl::StatusOr<VideoResult> RunImageToVideo(const RunContext& ctx, const std::string& image,
                                            const ImageToVideoParams& params) {
  auto decoded = DecodeInput(image, *ctx.model);
  if (!decoded.ok()) return decoded.status();
  runner::ModelExecutor::Inputs inputs{
      c10::IValue(ImageToTensor(*decoded)),
      c10::IValue(params.seed),
      c10::IValue(static_cast<int64_t>(params.height)),
      c10::IValue(static_cast<int64_t>(params.width)),
      c10::IValue(static_cast<int64_t>(params.fps)),
      c10::IValue(static_cast<int64_t>(params.motion_bucket_id)),
      c10::IValue(params.noise_aug_strength),
      c10::IValue(static_cast<int64_t>(params.num_inference_steps))};
  auto out = RunModel(ctx, std::move(inputs));
  if (!out.ok()) return out.status();
  auto frames = CheckImageBatch(*out, ctx.model->id, -1, params.height, params.width);
  if (!frames.ok()) return frames.status();
  if (frames->size(0) > params.max_frames) {
    return absl::InternalError(absl::StrCat("model '", ctx.model->id, "' returned ",
                                            frames->size(0), " frames, more than max_frames ",
                                            params.max_frames));
  }
  auto mp4 = EncodeMp4(*frames, params.fps, params.encoder_threads);
  if (!mp4.ok()) return mp4.status();
  VideoResult result;
  result.mp4 = std::move(*mp4);
  result.width = params.width;
  result.height = params.height;
  result.frames = static_cast<int>(frames->size(0));
  result.output_pixels = static_cast<int64_t>(result.frames) * params.width * params.height;
  return result;
}

absl::StatusOr<MasksResult> RunSegmentAnything2(const RunContext& ctx, const std::string& image,
                                                const SegmentAnything2Params& params) {
  auto decoded = DecodeInput(image, *ctx.model);
  if (!decoded.ok()) return decoded.status();
  const int w = decoded->width, h = decoded->height;
  const int64_t points = static_cast<int64_t>(params.point_coords.size() / 2);
  at::Tensor coords = at::empty({points, 2}, at::kFloat);
  auto coords_a = coords.accessor<float, 2>();
  for (int64_t i = 0; i < points; ++i) {
    float x = params.point_coords[2 * i], y = params.point_coords[2 * i + 1];
    if (params.normalize_coords) {
      x /= static_cast<float>(w);
      y /= static_cast<float>(h);
    }
    coords_a[i][0] = x;
    coords_a[i][1] = y;
  }
  at::Tensor labels = at::empty({points}, at::kLong);
  auto labels_a = labels.accessor<int64_t, 1>();
  for (int64_t i = 0; i < points; ++i) labels_a[i] = params.point_labels[i];
  const int64_t boxes = params.box.empty() ? 0 : 1;
  at::Tensor box = at::empty({boxes, 4}, at::kFloat);
  if (boxes == 1) {
    auto box_a = box.accessor<float, 2>();
    for (int j = 0; j < 4; ++j) {
      box_a[0][j] = params.box[j];
      if (params.normalize_coords) box_a[0][j] /= static_cast<float>(j % 2 == 0 ? w : h);
    }
  }
  const int64_t masks_in = params.mask_input.empty() ? 0 : 1;
  at::Tensor mask_input = at::zeros({masks_in, 256, 256}, at::kFloat);
  if (masks_in == 1) {
    std::memcpy(mask_input.data_ptr<float>(), params.mask_input.data(),
                params.mask_input.size() * sizeof(float));
  }
  runner::ModelExecutor::Inputs inputs{c10::IValue(ImageToTensor(*decoded)),
                                       c10::IValue(coords),
                                       c10::IValue(labels),
                                       c10::IValue(box),
                                       c10::IValue(mask_input),
                                       c10::IValue(params.multimask_output),
                                       c10::IValue(params.normalize_coords)};
  auto out = RunModel(ctx, std::move(inputs));
  if (!out.ok()) return out.status();

  const std::string expected = absl::StrCat("a tuple (masks float32 [K, ", h, ", ", w,
                                            "], scores float32 [K], logits float32 [K, h, w])");
  auto bad = [&](const std::string& what) {
    return absl::InternalError(
        absl::StrCat("model '", ctx.model->id, "' returned ", what, ", expected ", expected));
  };
  if (!out->isTuple() || out->toTupleRef().elements().size() != 3) {
    return bad(DescribeValue(*out));
  }
  const auto& elems = out->toTupleRef().elements();
  const char* names[3] = {"masks", "scores", "logits"};
  for (int i = 0; i < 3; ++i) {
    if (!elems[i].isTensor() || elems[i].toTensor().scalar_type() != at::kFloat) {
      return bad(absl::StrCat(names[i], " as ", DescribeValue(elems[i])));
    }
  }
  const at::Tensor masks = elems[0].toTensor();
  const at::Tensor scores = elems[1].toTensor();
  const at::Tensor logits = elems[2].toTensor();
  if (masks.dim() != 3 || masks.size(0) < 1 || masks.size(1) != h || masks.size(2) != w) {
    return bad(absl::StrCat("masks as ", DescribeTensor(masks)));
  }
  const int64_t k = masks.size(0);
  if (scores.dim() != 1 || scores.size(0) != k) {
    return bad(absl::StrCat("scores as ", DescribeTensor(scores)));
  }
  if (logits.dim() != 3 || logits.size(0) != k) {
    return bad(absl::StrCat("logits as ", DescribeTensor(logits)));
  }
  MasksResult result;
  if (params.packed_tensors) {
    // 0/1 as floats when thresholded, as the JSON form prints them.
    TensorToPacked(params.return_logits ? masks : (masks > 0).to(at::kFloat), &result.masks_tensor);
    TensorToPacked(scores, &result.scores_tensor);
    TensorToPacked(logits, &result.logits_tensor);
  } else {
    result.masks = TensorToJson(masks, /*as_binary=*/!params.return_logits);
    result.scores = TensorToJson(scores);
    result.logits = TensorToJson(logits);
  }
  result.num_masks = static_cast<int>(k);
  result.input_width = w;
  result.input_height = h;
  return result;
}

namespace {

// OCR (docs/pipelines-image.md, "OCR contract"): PaddleOCR's defaults (tools/infer/utility.py).
constexpr int kOcrDetLimitSide = 960;     // det_limit_side_len, det_limit_type "max"
constexpr int kOcrLineHeight = 48;        // rec_image_shape 3,48,320
constexpr int kOcrMinLineWidth = 320;     // lines are padded to at least this
constexpr int kOcrMaxLineWidth = 2048;    // wider lines are squeezed: bounds one batch's tensor
constexpr int kOcrClsWidth = 192;         // cls_image_shape 3,48,192
constexpr float kOcrClsThreshold = 0.9f;  // cls_thresh
constexpr float kOcrDropScore = 0.5f;     // drop_score: lines recognised with less confidence
constexpr size_t kOcrRecBatch = 6;        // rec_batch_num
constexpr size_t kOcrClsBatch = 6;        // cls_batch_num
// Not PaddleOCR's 1.5: with it the boxes of the converted PP-OCRv4 detector hug the glyphs and
// cut descenders and end punctuation (a 20-line page: CER 8.3% at 1.5, 0.1% at 2.0).
constexpr float kOcrUnclipRatio = 2.0f;

// Text lines as float [N, 3, 48, width], each resized to `widths[i]` x 48 and padded on the right
// with 127.5 (0 after the bundle's normalisation, as PaddleOCR pads).
at::Tensor LinesToTensor(const std::vector<const media::RgbImage*>& lines,
                         const std::vector<int>& widths, int width) {
  at::Tensor out =
      at::full({static_cast<int64_t>(lines.size()), 3, kOcrLineHeight, width}, 127.5f, at::kFloat);
  auto a = out.accessor<float, 4>();
  for (size_t i = 0; i < lines.size(); ++i) {
    const media::RgbImage line = ocr::Resize(*lines[i], widths[i], kOcrLineHeight);
    for (int y = 0; y < line.height; ++y) {
      for (int x = 0; x < line.width; ++x) {
        const uint8_t* p = &line.pixels[(static_cast<size_t>(y) * line.width + x) * 3];
        for (int c = 0; c < 3; ++c) a[i][c][y][x] = p[c];
      }
    }
  }
  return out;
}

absl::Status OcrContractError(const RunContext& ctx, const std::string& what) {
  return absl::InternalError(absl::StrCat("model '", ctx.model->id,
                                          "' is marked as an OCR bundle (ocr_contract) but ", what,
                                          " (docs/pipelines-image.md, OCR contract)"));
}

// A float tensor of `dims` dimensions from a method's result, contiguous on the CPU.
absl::StatusOr<at::Tensor> OcrTensor(const RunContext& ctx, const c10::IValue& value,
                                     const char* method, int64_t dims, int64_t n) {
  if (!value.isTensor() || value.toTensor().dim() != dims || value.toTensor().size(0) != n ||
      !at::isFloatingType(value.toTensor().scalar_type())) {
    return OcrContractError(ctx, absl::StrCat(method, " returned ", DescribeValue(value)));
  }
  return value.toTensor().to(at::kFloat).contiguous();
}

absl::StatusOr<std::string> RunOcr(const RunContext& ctx, const media::RgbImage& image) {
  const runner::TorchModel& model = *ctx.executor->model();
  const bool has_cls = model.IntAttribute(runner::kOcrClassifierAttribute).value_or(0) == 1;
  for (const char* method : {"detect", "recognize", "alphabet", has_cls ? "classify" : nullptr}) {
    if (method != nullptr && !model.HasMethod(method)) {
      return OcrContractError(ctx, absl::StrCat("has no method '", method, "'"));
    }
  }
  auto alphabet_value = RunModel(ctx, {}, "alphabet");
  if (!alphabet_value.ok()) return alphabet_value.status();
  std::vector<std::string> alphabet;
  if (alphabet_value->isList()) {
    for (const c10::IValue& c : alphabet_value->toListRef()) {
      if (!c.isString()) break;
      alphabet.push_back(c.toStringRef());
    }
  }
  if (!alphabet_value->isList() || alphabet.size() != alphabet_value->toListRef().size() ||
      alphabet.size() < 2) {
    return OcrContractError(ctx,
                            absl::StrCat("alphabet returned ", DescribeValue(*alphabet_value),
                                         ", expected a List[str] of the blank and the characters"));
  }

  // Detection on the image resized to multiples of 32.
  const ocr::Size det = ocr::DetectionSize(image.width, image.height, kOcrDetLimitSide);
  const media::RgbImage resized = det.width == image.width && det.height == image.height
                                      ? image
                                      : ocr::Resize(image, det.width, det.height);
  auto det_out = RunModel(ctx, {c10::IValue(ImageToTensor(resized))}, "detect");
  if (!det_out.ok()) return det_out.status();
  auto map = OcrTensor(ctx, *det_out, "detect", 4, 1);
  if (!map.ok()) return map.status();
  if (map->size(1) != 1 || map->size(2) != det.height || map->size(3) != det.width) {
    return OcrContractError(ctx, absl::StrCat("detect returned ", DescribeTensor(*map),
                                              " for an image of ", det.width, "x", det.height));
  }
  ocr::DbParams db;
  db.unclip_ratio = kOcrUnclipRatio;
  auto boxes = ocr::DbPostProcess(map->data_ptr<float>(), det.width, det.height, image.width,
                                  image.height, db);
  if (!boxes.ok()) return boxes.status();
  if (boxes->empty()) return std::string();

  // Each box's crop is resized at once to the recogniser's height (width at most 2048): what is
  // kept per box is then at most 48 x 2048 pixels, however large or nested the boxes are.
  std::vector<media::RgbImage> crops;
  crops.reserve(boxes->size());
  for (const ocr::Box& box : *boxes) {
    const media::RgbImage crop = ocr::Crop(image, box);
    crops.push_back(
        ocr::Resize(crop, ocr::LineWidth(crop.width, crop.height, kOcrLineHeight, kOcrMaxLineWidth),
                    kOcrLineHeight));
  }

  // Orientation: a line the classifier reads as upside down (180, score >= 0.9) is turned.
  if (has_cls) {
    for (size_t start = 0; start < crops.size(); start += kOcrClsBatch) {
      const size_t end = std::min(crops.size(), start + kOcrClsBatch);
      std::vector<const media::RgbImage*> lines;
      std::vector<int> widths;
      for (size_t i = start; i < end; ++i) {
        lines.push_back(&crops[i]);
        widths.push_back(
            ocr::LineWidth(crops[i].width, crops[i].height, kOcrLineHeight, kOcrClsWidth));
      }
      auto cls_out =
          RunModel(ctx, {c10::IValue(LinesToTensor(lines, widths, kOcrClsWidth))}, "classify");
      if (!cls_out.ok()) return cls_out.status();
      auto probs = OcrTensor(ctx, *cls_out, "classify", 2, static_cast<int64_t>(lines.size()));
      if (!probs.ok()) return probs.status();
      if (probs->size(1) != 2) {
        return OcrContractError(ctx, absl::StrCat("classify returned ", DescribeTensor(*probs)));
      }
      auto p = probs->accessor<float, 2>();
      for (size_t i = start; i < end; ++i) {
        const float up = p[i - start][0], down = p[i - start][1];
        if (down > up && down >= kOcrClsThreshold) crops[i] = ocr::Rotate180(crops[i]);
      }
    }
  }

  // Recognition in batches of lines of similar aspect ratio (less padding), as PaddleOCR sorts.
  std::vector<int> widths(crops.size());
  for (size_t i = 0; i < crops.size(); ++i) {
    widths[i] = ocr::LineWidth(crops[i].width, crops[i].height, kOcrLineHeight, kOcrMaxLineWidth);
  }
  std::vector<size_t> by_width(crops.size());
  std::iota(by_width.begin(), by_width.end(), size_t{0});
  std::stable_sort(by_width.begin(), by_width.end(),
                   [&](size_t a, size_t b) { return widths[a] < widths[b]; });
  std::vector<std::string> texts(crops.size());
  for (size_t start = 0; start < by_width.size(); start += kOcrRecBatch) {
    const size_t end = std::min(by_width.size(), start + kOcrRecBatch);
    std::vector<const media::RgbImage*> lines;
    std::vector<int> line_widths;
    int width = kOcrMinLineWidth;
    for (size_t k = start; k < end; ++k) {
      lines.push_back(&crops[by_width[k]]);
      line_widths.push_back(widths[by_width[k]]);
      width = std::max(width, widths[by_width[k]]);
    }
    auto rec_out =
        RunModel(ctx, {c10::IValue(LinesToTensor(lines, line_widths, width))}, "recognize");
    if (!rec_out.ok()) return rec_out.status();
    auto probs = OcrTensor(ctx, *rec_out, "recognize", 3, static_cast<int64_t>(lines.size()));
    if (!probs.ok()) return probs.status();
    if (probs->size(2) != static_cast<int64_t>(alphabet.size())) {
      return OcrContractError(ctx, absl::StrCat("recognize returned ", probs->size(2),
                                                " classes for an alphabet of ", alphabet.size()));
    }
    const int64_t steps = probs->size(1), classes = probs->size(2);
    for (size_t k = start; k < end; ++k) {
      auto line = ocr::CtcGreedyDecode(
          probs->data_ptr<float>() + static_cast<int64_t>(k - start) * steps * classes, steps,
          classes, alphabet);
      if (!line.ok()) return line.status();
      if (line->score >= kOcrDropScore) texts[by_width[k]] = std::move(line->text);
    }
  }
  return ocr::JoinText(ocr::ReadingOrder(*boxes), texts);
}

}  // namespace

absl::StatusOr<TextResult> RunImageToText(const RunContext& ctx, const std::string& image,
                                          const std::string& prompt) {
  auto decoded = DecodeInput(image, *ctx.model);
  if (!decoded.ok()) return decoded.status();
  // A module with the OCR marker runs its networks here and is post-processed in C++ (the
  // prompt is not used); any other follows forward(image, prompt) -> str.
  if (auto contract = ctx.executor->model()->IntAttribute(runner::kOcrContractAttribute)) {
    if (*contract != runner::kOcrContractVersion) {
      return absl::InternalError(absl::StrCat("model '", ctx.model->id, "' follows OCR contract ",
                                              *contract, "; this orchestrator knows version ",
                                              runner::kOcrContractVersion));
    }
    auto text = RunOcr(ctx, *decoded);
    if (!text.ok()) return text.status();
    return TextResult{std::move(*text), decoded->width, decoded->height};
  }
  runner::ModelExecutor::Inputs inputs{c10::IValue(ImageToTensor(*decoded)), c10::IValue(prompt)};
  auto out = RunModel(ctx, std::move(inputs));
  if (!out.ok()) return out.status();
  if (!out->isString()) {
    return absl::InternalError(absl::StrCat("model '", ctx.model->id, "' returned ",
                                            DescribeValue(*out), ", expected str"));
  }
  return TextResult{out->toStringRef(), decoded->width, decoded->height};
}

namespace {

// Multiple of 8 not below 8, for warm-up sizes.
int64_t Round8(int64_t v) { return std::max<int64_t>(8, (v + 7) / 8 * 8); }

}  // namespace

WarmupInputs ImageWarmupInputs(const ModelConfig& model) {
  if (model.warmup_size <= 0) return std::nullopt;
  const int64_t s = Round8(model.warmup_size);
  auto image = [&] { return c10::IValue(at::zeros({1, 3, s, s}, at::kFloat)); };
  using Inputs = runner::ModelExecutor::Inputs;
  if (model.pipeline == pipelines::kTextToImage) {
    return Inputs{c10::IValue(std::string("warm-up")),
                  c10::IValue(std::string()),
                  c10::IValue(int64_t{0}),
                  c10::IValue(int64_t{1}),
                  c10::IValue(7.5),
                  c10::IValue(s),
                  c10::IValue(s),
                  c10::IValue(int64_t{1})};
  }
  if (model.pipeline == pipelines::kImageToImage) {
    return Inputs{image(),
                  c10::IValue(std::string("warm-up")),
                  c10::IValue(std::string()),
                  c10::IValue(int64_t{0}),
                  c10::IValue(0.8),
                  c10::IValue(7.5),
                  c10::IValue(1.5),
                  c10::IValue(int64_t{1}),
                  c10::IValue(int64_t{1})};
  }
  if (model.pipeline == pipelines::kImageToVideo) {
    return Inputs{image(),           c10::IValue(int64_t{0}), c10::IValue(s),
                  c10::IValue(s),    c10::IValue(int64_t{6}), c10::IValue(int64_t{127}),
                  c10::IValue(0.02), c10::IValue(int64_t{1})};
  }
  if (model.pipeline == pipelines::kSegmentAnything2) {
    return Inputs{image(),
                  c10::IValue(at::full({1, 2}, 0.5, at::kFloat)),
                  c10::IValue(at::ones({1}, at::kLong)),
                  c10::IValue(at::zeros({0, 4}, at::kFloat)),
                  c10::IValue(at::zeros({0, 256, 256}, at::kFloat)),
                  c10::IValue(true),
                  c10::IValue(true)};
  }
  if (model.pipeline == pipelines::kImageToText) {
    // An OCR bundle's forward(image, "") is its warm-up: it runs each of its networks once
    // (runner/ocr_bundle.h), so the same inputs suit both kinds of image-to-text model.
    return Inputs{image(), c10::IValue(std::string())};
  }
  return std::nullopt;
}

}  // namespace switchyard::orchestrator
