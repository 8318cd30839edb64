// The audio and text pipelines' jobs: audio-to-text, llm (streamed), image-to-text and
// text-to-speech (job_command.h says what a Job is).
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "cli/cli_files.h"
#include "cli/job_command.h"
#include "common/metering.h"
#include "common/status.h"

namespace switchyard::cli::internal {

namespace v1 = switchyard::v1;

template <>
struct Job<v1::AudioToTextRequest> : ModelInFlags {
  static constexpr char kDescription[] = "Transcribe audio (any format FFmpeg reads)";
  static constexpr auto kMethod = &v1::Gateway::Stub::AudioToText;
  std::string timestamps;

  void AddOptions(CLI::App& c) {
    AddModelIn(c, "Input audio (WAV, MP3, M4A, FLAC, ...)");
    c.add_option("--timestamps", timestamps,
                 "Timestamped chunks: sentence, word or false (default: sentence, not printed "
                 "unless asked for)")
        ->check(CLI::IsMember({"sentence", "word", "true", "false"}));
  }

  absl::StatusOr<v1::AudioToTextRequest> BuildRequest() const {
    absl::StatusOr<std::string> audio = ReadInputFile(in, "input audio");
    if (!audio.ok()) return audio.status();
    v1::AudioToTextRequest request;
    request.set_model_id(model);
    request.set_audio(*std::move(audio));
    request.set_return_timestamps(timestamps);
    return request;
  }

  int Report(const GlobalOptions& global, const v1::TextResponse& response, double elapsed_ms,
             std::ostream& out, std::ostream& err) const {
    if (global.json) {
      Json chunks = Json::array();
      for (const v1::Chunk& c : response.chunks()) {
        chunks.push_back(
            Json{{"timestamp", std::vector<double>(c.timestamp().begin(), c.timestamp().end())},
                 {"text", c.text()}});
      }
      return PrintJobJson(Json{{"text", response.text()}, {"chunks", std::move(chunks)}}, global,
                          elapsed_ms, response.job(), out);
    }
    // The transcription alone on stdout (so it can be piped); chunks when asked for.
    out << response.text() << "\n";
    if (!timestamps.empty() && timestamps != "false") {
      for (const v1::Chunk& c : response.chunks()) {
        const double start = c.timestamp_size() > 0 ? c.timestamp(0) : 0;
        const double end = c.timestamp_size() > 1 ? c.timestamp(1) : start;
        out << "[" << FormatDouble(start, "%.2f") << " - " << FormatDouble(end, "%.2f") << "] "
            << c.text() << "\n";
      }
    }
    err << JobLine(pipelines::kAudioToText, response.job(), model) << "\n";
    return kExitOk;
  }
};

template <>
struct Job<v1::LLMRequest> {
  static constexpr char kDescription[] =
      "Chat completion: prints the tokens as they stream (--json: the final result)";
  std::string model, prompt, system;
  std::vector<std::string> messages;
  OptionalFlag<float> temperature;
  OptionalFlag<int32_t> max_tokens;
  OptionalFlag<float> top_p;
  OptionalFlag<int32_t> top_k;

  void AddOptions(CLI::App& c) {
    c.add_option("--model", model, "Model id")->required();
    c.add_option("--prompt", prompt, "The user's message (sent last)");
    c.add_option("--system", system, "A system message (sent first)");
    c.add_option("--message", messages,
                 "A message ROLE=CONTENT (ROLE system, user or assistant), in order between "
                 "--system and --prompt; repeat for a conversation")
        ->allow_extra_args(false);
    temperature.Add(c, "--temperature", "Sampling temperature (default 0.7)")
        ->check(CLI::Range(0.0, 100.0));
    max_tokens.Add(c, "--max-tokens", "Most tokens to generate (default 256)")
        ->check(CLI::PositiveNumber);
    top_p.Add(c, "--top-p", "Nucleus sampling probability (default 1)")
        ->check(CLI::Range(0.0, 1.0));
    top_k.Add(c, "--top-k", "Top-k sampling, -1 off (default -1)")->check(CLI::Range(-1, 1 << 20));
  }

  absl::StatusOr<v1::LLMRequest> BuildRequest() const {
    v1::LLMRequest request;
    request.set_model(model);
    const auto add = [&](std::string role, std::string content) {
      v1::LLMMessage* m = request.add_messages();
      m->set_role(std::move(role));
      m->set_content(std::move(content));
    };
    if (!system.empty()) add("system", system);
    for (const std::string& message : messages) {
      const size_t eq = message.find('=');
      const std::string role = eq == std::string::npos ? "" : message.substr(0, eq);
      if (role != "system" && role != "user" && role != "assistant") {
        return absl::InvalidArgumentError(
            absl::StrCat("invalid --message ", Quote(message),
                         ": expected ROLE=CONTENT with ROLE system, user or assistant"));
      }
      add(role, message.substr(eq + 1));
    }
    if (!prompt.empty()) add("user", prompt);
    if (request.messages_size() == 0) {
      return absl::InvalidArgumentError("give a --prompt (or --message ROLE=CONTENT)");
    }
    if (temperature.given()) request.set_temperature(temperature.value);
    if (max_tokens.given()) request.set_max_tokens(max_tokens.value);
    if (top_p.given()) request.set_top_p(top_p.value);
    if (top_k.given()) request.set_top_k(top_k.value);
    return request;
  }

  // The LLM streams: tokens go to the terminal as they come, which is the point of the RPC.
  int Stream(const GlobalOptions& global, const v1::LLMRequest& request, std::ostream& out,
             std::ostream& err) const {
    grpc::ClientContext context;
    PrepareContext(global, context);
    auto stub = MakeStub(global);
    const auto start = std::chrono::steady_clock::now();
    std::unique_ptr<grpc::ClientReader<v1::LLMResponse>> reader = stub->LLM(&context, request);
    v1::LLMResponse message;
    v1::LLMResponse last;
    std::string text;
    std::string finish_reason;
    int count = 0;
    double first_token_ms = -1;
    while (reader->Read(&message)) {
      ++count;
      for (const v1::LLMChoice& choice : message.choices()) {
        if (!choice.delta().content().empty()) {
          if (first_token_ms < 0) first_token_ms = MillisecondsSince(start);
          text += choice.delta().content();
          if (!global.json) out << choice.delta().content() << std::flush;
        }
        if (!choice.finish_reason().empty()) finish_reason = choice.finish_reason();
      }
      last = message;
    }
    const grpc::Status status = reader->Finish();
    const double elapsed_ms = MillisecondsSince(start);
    if (!global.json && !text.empty()) out << "\n";
    if (!status.ok()) return ReportRpcError(global, status, err);
    if (count == 0) return NoResult(global, "tokens", err);

    const v1::LLMTokenUsage& usage = last.usage();
    if (global.json) {
      return PrintJobJson(Json{{"id", last.id()},
                               {"model", last.model()},
                               {"created", last.created()},
                               {"text", text},
                               {"finish_reason", finish_reason},
                               {"usage", Json{{"prompt_tokens", usage.prompt_tokens()},
                                              {"completion_tokens", usage.completion_tokens()},
                                              {"total_tokens", usage.total_tokens()}}},
                               {"messages", count},
                               {"first_token_ms", first_token_ms}},
                          global, elapsed_ms, last.job(), out);
    }
    // The statistics go to stderr so that stdout holds the completion alone.
    err << "llm: " << usage.prompt_tokens() << " prompt + " << usage.completion_tokens()
        << " completion tokens, finish " << (finish_reason.empty() ? "?" : finish_reason) << "; "
        << JobLine(pipelines::kLlm, last.job(), model) << "\n";
    return kExitOk;
  }
};

template <>
struct Job<v1::ImageToTextRequest> : ModelInFlags {
  static constexpr char kDescription[] = "Describe an image in text";
  static constexpr auto kMethod = &v1::Gateway::Stub::ImageToText;
  std::string prompt;

  void AddOptions(CLI::App& c) {
    c.add_option("--model", model, "Model id, e.g. paddleocr-v4")->required();
    // --image as the and OCR users' spelling; --in as every other image job.
    c.add_option("--in,--image", in, "Input image (PNG or JPEG)")->required();
    c.add_option("--prompt", prompt, "Prompt to guide the description (OCR models ignore it)");
  }

  absl::StatusOr<v1::ImageToTextRequest> BuildRequest() const {
    absl::StatusOr<v1::ImageToTextRequest> request = RequestWithImage<v1::ImageToTextRequest>();
    if (request.ok()) request->set_prompt(prompt);
    return request;
  }

  int Report(const GlobalOptions& global, const v1::ImageToTextResponse& response,
             double elapsed_ms, std::ostream& out, std::ostream& err) const {
    if (global.json) {
      return PrintJobJson(Json{{"text", response.text()}}, global, elapsed_ms, response.job(), out);
    }
    out << response.text() << "\n";
    err << JobLine(pipelines::kImageToText, response.job(), model) << "\n";
    return kExitOk;
  }
};

template <>
struct Job<v1::TextToSpeechRequest> {
  static constexpr char kDescription[] = "Synthesise speech from text into a WAV file";
  static constexpr auto kMethod = &v1::Gateway::Stub::TextToSpeech;
  std::string model, text, description, out;

  void AddOptions(CLI::App& c) {
    c.add_option("--model", model, "Model id")->required();
    c.add_option("--text", text, "Text to speak")->required();
    c.add_option("--description", description,
                 "Description of the speaker (gateway default: the Livepeer one)");
    c.add_option("--out", out, "Output WAV file")->required();
  }

  absl::StatusOr<v1::TextToSpeechRequest> BuildRequest() const {
    SY_RETURN_IF_ERROR(CheckWritableFile(out));
    v1::TextToSpeechRequest request;
    request.set_model_id(model);
    request.set_text(text);
    request.set_description(description);
    return request;
  }

  int Report(const GlobalOptions& global, const v1::AudioResponse& response, double elapsed_ms,
             std::ostream& o, std::ostream& err) const {
    const std::string& wav = response.audio().data();
    if (wav.empty()) return NoResult(global, "audio", err);
    if (absl::Status st = WriteFileAtomically(out, wav); !st.ok()) return ReportUsageError(st, err);
    // The text-to-speech contract returns a PCM WAV; its format is shown when it parses.
    const absl::StatusOr<metering::WavFormat> info = metering::ReadWavFormat(wav);
    if (global.json) {
      Json json = {{"output", out},
                   {"bytes", wav.size()},
                   {"content_type", response.audio().content_type()}};
      if (info.ok()) {
        json["sample_rate"] = info->sample_rate;
        json["channels"] = info->channels;
        json["duration_seconds"] = info->seconds();
      }
      return PrintJobJson(std::move(json), global, elapsed_ms, response.job(), o);
    }
    o << "wrote " << out << " (" << wav.size() << " bytes, " << response.audio().content_type();
    if (info.ok()) {
      o << ", " << FormatDouble(info->seconds(), "%.2f") << " s, " << info->sample_rate << " Hz, "
        << info->channels << (info->channels == 1 ? " channel" : " channels");
    }
    o << ")\n" << JobLine(pipelines::kTextToSpeech, response.job(), model) << "\n";
    return kExitOk;
  }
};

template CommandPtr NewJobCommand<v1::AudioToTextRequest>();
template CommandPtr NewJobCommand<v1::LLMRequest>();
template CommandPtr NewJobCommand<v1::ImageToTextRequest>();
template CommandPtr NewJobCommand<v1::TextToSpeechRequest>();
template QuotePartPtr NewQuotePart<v1::AudioToTextRequest>();
template QuotePartPtr NewQuotePart<v1::LLMRequest>();
template QuotePartPtr NewQuotePart<v1::ImageToTextRequest>();
template QuotePartPtr NewQuotePart<v1::TextToSpeechRequest>();

}  // namespace switchyard::cli::internal
