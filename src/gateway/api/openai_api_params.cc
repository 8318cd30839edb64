// The OpenAI-compatible API's request bodies: which fields are honoured (mapped onto the
// gateway's LLMRequest), which are accepted and ignored (they do not change the result), and which
// are refused (they would change the result in a way this gateway cannot honour). Fields OpenAI
// does not know are refused, as OpenAI refuses them. docs/openai-api.md has the same lists.
#include <cmath>
#include <limits>
#include <set>
#include <string_view>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "gateway/api/openai_api_internal.h"

namespace switchyard::gateway::openai {
namespace {

Error Invalid(std::string message, std::string param, std::string code = "") {
  return Error{400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

// A field this API cannot honour with a value that would change the result.
Error Unsupported(const std::string& param, const std::string& why) {
  return Invalid(absl::StrCat("'", param, "' is not supported by this gateway: ", why), param,
                 "unsupported_parameter");
}

Error WrongType(const std::string& param, const char* want) {
  return Invalid(absl::StrCat("Invalid type for '", param, "': expected ", want, "."), param,
                 "invalid_type");
}

// JSON integer (or a float with no fraction, as JavaScript clients send them) in [min, max].
std::optional<Error> ReadInt(const Json& v, const std::string& param, int64_t min, int64_t max,
                             int64_t* out) {
  int64_t value = 0;
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() &&
        v.get<uint64_t>() > uint64_t{std::numeric_limits<int64_t>::max()}) {
      return Invalid(absl::StrCat("'", param, "' must be at most ", max, "."), param,
                     "integer_above_max_value");
    }
    value = v.get<int64_t>();
  } else if (v.is_number_float() && std::trunc(v.get<double>()) == v.get<double>() &&
             std::abs(v.get<double>()) < 9e18) {
    value = static_cast<int64_t>(v.get<double>());
  } else {
    return WrongType(param, "an integer");
  }
  if (value < min) {
    return Invalid(absl::StrCat("'", param, "' must be at least ", min, "; got ", value, "."),
                   param, "integer_below_min_value");
  }
  if (value > max) {
    return Invalid(absl::StrCat("'", param, "' must be at most ", max, "; got ", value, "."), param,
                   "integer_above_max_value");
  }
  *out = value;
  return std::nullopt;
}

std::optional<Error> ReadNumber(const Json& v, const std::string& param, double min, double max,
                                double* out) {
  if (!v.is_number()) return WrongType(param, "a number");
  const double value = v.get<double>();
  if (!std::isfinite(value) || value < min || value > max) {
    return Invalid(
        absl::StrCat("'", param, "' must be between ", min, " and ", max, "; got ", value, "."),
        param, "decimal_out_of_range");
  }
  *out = value;
  return std::nullopt;
}

std::optional<Error> ReadBool(const Json& v, const std::string& param, bool* out) {
  if (!v.is_boolean()) return WrongType(param, "a boolean");
  *out = v.get<bool>();
  return std::nullopt;
}

// "stop": a string or an array of at most 4 strings, each 1..256 bytes.
std::optional<Error> ReadStop(const Json& v, v1::LLMRequest* r) {
  auto one = [&](const Json& s, const std::string& param) -> std::optional<Error> {
    if (!s.is_string()) return WrongType(param, "a string");
    const auto& text = s.get_ref<const std::string&>();
    if (text.empty() || text.size() > kMaxStopBytes) {
      return Invalid(absl::StrCat("'", param, "' must be 1 to ", kMaxStopBytes, " bytes; got ",
                                  text.size(), "."),
                     param, "invalid_value");
    }
    r->add_stop(text);
    return std::nullopt;
  };
  if (v.is_string()) return one(v, "stop");
  if (!v.is_array()) return WrongType("stop", "a string or an array of strings");
  if (v.size() > kMaxStops) {
    return Invalid(
        absl::StrCat("'stop' has ", v.size(), " strings; at most ", kMaxStops, " are allowed."),
        "stop", "array_above_max_length");
  }
  for (size_t i = 0; i < v.size(); ++i) {
    if (auto e = one(v[i], absl::StrCat("stop[", i, "]"))) return e;
  }
  return std::nullopt;
}

// "messages": 1..2048 objects {role, content, name?}; content a string or text parts.
std::optional<Error> ReadMessages(const Json& v, v1::LLMRequest* r) {
  if (!v.is_array()) return WrongType("messages", "an array");
  if (v.empty()) {
    return Invalid("'messages' must have at least one message.", "messages", "empty_array");
  }
  if (v.size() > kMaxMessages) {
    return Invalid(absl::StrCat("'messages' has ", v.size(), " messages; at most ", kMaxMessages,
                                " are allowed."),
                   "messages", "array_above_max_length");
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string at = absl::StrCat("messages[", i, "]");
    const Json& m = v[i];
    if (!m.is_object()) return WrongType(at, "an object");
    auto* out = r->add_messages();
    for (const auto& [key, value] : m.items()) {
      const std::string param = absl::StrCat(at, ".", key);
      if (value.is_null()) continue;  // absent, as OpenAI reads null
      if (key == "role") {
        if (!value.is_string()) return WrongType(param, "a string");
        std::string role = value.get<std::string>();
        if (role == "developer") role = "system";  // OpenAI's newer name for it
        if (role == "tool" || role == "function") {
          return Unsupported(param, "tool and function calling are not available");
        }
        if (role != "system" && role != "user" && role != "assistant") {
          return Invalid(absl::StrCat("'", param, "' must be one of 'system', 'developer', ",
                                      "'user', 'assistant'."),
                         param, "invalid_value");
        }
        out->set_role(role);
      } else if (key == "content") {
        if (value.is_string()) {
          out->set_content(value.get<std::string>());
        } else if (value.is_array()) {
          if (value.size() > kMaxContentParts) {
            return Invalid(absl::StrCat("'", param, "' has ", value.size(), " parts; at most ",
                                        kMaxContentParts, " are allowed."),
                           param, "array_above_max_length");
          }
          std::string text;
          for (size_t p = 0; p < value.size(); ++p) {
            const Json& part = value[p];
            const std::string pp = absl::StrCat(param, "[", p, "]");
            if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
              return WrongType(pp, "an object with a 'type'");
            }
            if (part["type"] != "text") {
              return Unsupported(absl::StrCat(pp, ".type"), "only text content parts are served");
            }
            if (!part.contains("text") || !part["text"].is_string()) {
              return WrongType(absl::StrCat(pp, ".text"), "a string");
            }
            text += part["text"].get<std::string>();
          }
          out->set_content(std::move(text));
        } else {
          return WrongType(param, "a string or an array of text parts");
        }
      } else if (key == "name") {
        if (!value.is_string()) return WrongType(param, "a string");
        // Ignored: the chat templates have no place for a participant's name.
      } else if (key == "tool_calls" || key == "function_call" || key == "tool_call_id") {
        return Unsupported(param, "tool and function calling are not available");
      } else {
        return Invalid(absl::StrCat("Unrecognized field '", key, "' in ", at, "."), param,
                       "unknown_parameter");
      }
    }
    if (!m.contains("role") || m["role"].is_null()) {
      return Invalid(absl::StrCat("Missing required parameter: '", at, ".role'."),
                     absl::StrCat(at, ".role"), "missing_required_parameter");
    }
    if (!m.contains("content") || m["content"].is_null()) {
      return Invalid(absl::StrCat("Missing required parameter: '", at, ".content'."),
                     absl::StrCat(at, ".content"), "missing_required_parameter");
    }
  }
  return std::nullopt;
}

// What both endpoints share. Returns true when `key` was one of them (its error, if any, in
// `error`).
bool ReadCommon(const std::string& key, const Json& v, LlmCallSpec* out, bool* stream_options_seen,
                std::optional<Error>* error) {
  v1::LLMRequest* r = &out->request;
  if (key == "model") {
    if (!v.is_string()) {
      *error = WrongType(key, "a string");
    } else if (v.get_ref<const std::string&>().size() > kMaxModelIdBytes) {
      *error = Invalid(absl::StrCat("'model' is over ", kMaxModelIdBytes, " bytes."), key,
                       "string_above_max_length");
    } else {
      r->set_model(v.get<std::string>());
    }
  } else if (key == "stream") {
    *error = ReadBool(v, key, &out->stream);
  } else if (key == "stream_options") {
    *stream_options_seen = true;
    if (!v.is_object()) {
      *error = WrongType(key, "an object");
      return true;
    }
    for (const auto& [k, value] : v.items()) {
      if (k == "include_usage") {
        if (!value.is_null())
          *error = ReadBool(value, "stream_options.include_usage", &out->include_usage);
      } else {
        *error = Invalid(absl::StrCat("Unrecognized field '", k, "' in stream_options."),
                         absl::StrCat("stream_options.", k), "unknown_parameter");
      }
      if (*error) return true;
    }
  } else if (key == "temperature") {
    double t = 0;
    *error = ReadNumber(v, key, 0, 2, &t);
    if (!*error) r->set_temperature(static_cast<float>(t));
  } else if (key == "top_p") {
    double p = 0;
    *error = ReadNumber(v, key, 0, 1, &p);
    if (!*error) r->set_top_p(static_cast<float>(p));
  } else if (key == "top_k") {  // not OpenAI's; vLLM's and the gateway's extension
    int64_t k = 0;
    *error = ReadInt(v, key, -1, std::numeric_limits<int32_t>::max(), &k);
    if (!*error && k == 0) {
      *error = Invalid("'top_k' must be -1 (off) or at least 1.", key, "invalid_value");
    }
    if (!*error) r->set_top_k(static_cast<int32_t>(k));
  } else if (key == "stop") {
    *error = ReadStop(v, r);
  } else if (key == "seed") {
    int64_t seed = 0;
    *error = ReadInt(v, key, std::numeric_limits<int64_t>::min(),
                     std::numeric_limits<int64_t>::max(), &seed);
    if (!*error) r->set_seed(seed);
  } else if (key == "n") {
    int64_t n = 0;
    *error = ReadInt(v, key, 1, std::numeric_limits<int32_t>::max(), &n);
    if (!*error && n != 1) {
      *error = Unsupported(key, "one choice per request (n = 1); send n requests instead");
    }
  } else if (key == "presence_penalty" || key == "frequency_penalty") {
    double p = 0;
    *error = ReadNumber(v, key, -2, 2, &p);
    if (!*error && p != 0) *error = Unsupported(key, "only 0 (no penalty) is served");
  } else if (key == "logit_bias") {
    if (!v.is_object()) {
      *error = WrongType(key, "an object");
    } else if (!v.empty()) {
      *error = Unsupported(key, "token biases are not available");
    }
  } else if (key == "user" || key == "metadata" || key == "store" || key == "service_tier" ||
             key == "safety_identifier" || key == "prompt_cache_key") {
    // Accepted and ignored: they label or route the request and do not change its result.
    if (key == "user" && !v.is_string()) *error = WrongType(key, "a string");
  } else {
    return false;
  }
  return true;
}

std::optional<Error> Finish(const Json& body, LlmCallSpec* out, bool stream_options_seen,
                            bool max_tokens_set, int64_t max_tokens) {
  if (!body.contains("model") || body["model"].is_null()) {
    return Invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter");
  }
  if (out->request.model().empty()) {
    return Invalid("'model' must name a model (GET /v1/models lists them).", "model",
                   "invalid_value");
  }
  if (stream_options_seen && !out->stream) {
    return Invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                   "stream_options", "invalid_value");
  }
  if (max_tokens_set) out->request.set_max_tokens(static_cast<int32_t>(max_tokens));
  return std::nullopt;
}

}  // namespace

http::Response ToResponse(const Error& e) {
  Json error{{"message", e.message},
             {"type", e.type},
             {"param", e.param.empty() ? Json(nullptr) : Json(e.param)},
             {"code", e.code.empty() ? Json(nullptr) : Json(e.code)}};
  return http::Json(e.status,
                    Json{{"error", error}}.dump(-1, ' ', false, Json::error_handler_t::replace));
}

std::optional<Error> ReadChatRequest(const Json& body, LlmCallSpec* out) {
  out->chat = true;
  bool stream_options_seen = false;
  bool max_tokens_set = false;
  int64_t max_tokens = 0;
  for (const auto& [key, v] : body.items()) {
    if (v.is_null()) continue;  // OpenAI reads null as absent
    std::optional<Error> error;
    if (ReadCommon(key, v, out, &stream_options_seen, &error)) {
      if (error) return error;
    } else if (key == "messages") {
      if (auto e = ReadMessages(v, &out->request)) return e;
    } else if (key == "max_tokens" || key == "max_completion_tokens") {
      int64_t n = 0;
      if (auto e = ReadInt(v, key, 1, std::numeric_limits<int32_t>::max(), &n)) return e;
      if (max_tokens_set && n != max_tokens) {
        return Invalid("'max_tokens' and 'max_completion_tokens' differ; send one of them.", key,
                       "invalid_value");
      }
      max_tokens_set = true;
      max_tokens = n;
    } else if (key == "logprobs") {
      bool on = false;
      if (auto e = ReadBool(v, key, &on)) return e;
      if (on) return Unsupported(key, "token log probabilities are not available");
    } else if (key == "top_logprobs") {
      int64_t n = 0;
      if (auto e = ReadInt(v, key, 0, 20, &n)) return e;
      if (n != 0) return Unsupported(key, "token log probabilities are not available");
    } else if (key == "tools" || key == "functions") {
      if (!v.is_array()) return WrongType(key, "an array");
      if (!v.empty()) return Unsupported(key, "tool and function calling are not available");
    } else if (key == "tool_choice" || key == "function_call") {
      // "none" and "auto" without tools both mean: answer with text, which is all there is.
      if (!(v.is_string() && (v == "none" || v == "auto"))) {
        return Unsupported(key, "tool and function calling are not available");
      }
    } else if (key == "parallel_tool_calls") {
      bool b = false;
      if (auto e = ReadBool(v, key, &b)) return e;  // no tools: nothing to call in parallel
    } else if (key == "response_format") {
      if (!v.is_object() || !v.contains("type") || !v["type"].is_string()) {
        return WrongType(key, "an object with a 'type'");
      }
      if (v["type"] != "text") {
        return Unsupported(key, "only {\"type\": \"text\"} is served (no JSON mode or schemas)");
      }
    } else if (key == "modalities") {
      if (!v.is_array()) return WrongType(key, "an array");
      for (const Json& m : v) {
        if (m != "text") return Unsupported(key, "only [\"text\"] is served");
      }
    } else if (key == "audio" || key == "prediction" || key == "web_search_options" ||
               key == "reasoning_effort" || key == "verbosity") {
      return Unsupported(key, "the models served here have no such feature");
    } else {
      return Invalid(absl::StrCat("Unrecognized request argument supplied: ", key), key,
                     "unknown_parameter");
    }
  }
  if (!body.contains("messages") || body["messages"].is_null()) {
    return Invalid("Missing required parameter: 'messages'.", "messages",
                   "missing_required_parameter");
  }
  return Finish(body, out, stream_options_seen, max_tokens_set, max_tokens);
}

std::optional<Error> ReadCompletionRequest(const Json& body, LlmCallSpec* out) {
  out->chat = false;
  bool stream_options_seen = false;
  bool max_tokens_set = true;  // OpenAI's default for completions is 16 tokens
  int64_t max_tokens = kCompletionsDefaultMaxTokens;
  for (const auto& [key, v] : body.items()) {
    if (v.is_null()) continue;
    std::optional<Error> error;
    if (ReadCommon(key, v, out, &stream_options_seen, &error)) {
      if (error) return error;
    } else if (key == "prompt") {
      const Json* p = &v;
      if (v.is_array()) {
        if (!v.empty() && (v[0].is_number() || v[0].is_array())) {
          return Unsupported(key, "prompts of token ids are not available; send text");
        }
        if (v.size() != 1) {
          return Unsupported(key, absl::StrCat("one prompt per request (got an array of ", v.size(),
                                               "); send one request per prompt"));
        }
        p = &v[0];
      }
      if (!p->is_string()) {
        return p->is_array() || p->is_number()
                   ? Unsupported(key, "prompts of token ids are not available; send text")
                   : WrongType(key, "a string");
      }
      out->request.set_prompt(p->get<std::string>());
    } else if (key == "max_tokens") {
      if (auto e = ReadInt(v, key, 1, std::numeric_limits<int32_t>::max(), &max_tokens)) return e;
    } else if (key == "best_of") {
      int64_t n = 0;
      if (auto e = ReadInt(v, key, 1, 20, &n)) return e;
      if (n != 1) return Unsupported(key, "one candidate per request (best_of = 1)");
    } else if (key == "echo") {
      bool on = false;
      if (auto e = ReadBool(v, key, &on)) return e;
      if (on) return Unsupported(key, "the prompt is not echoed");
    } else if (key == "logprobs") {
      int64_t n = 0;
      if (auto e = ReadInt(v, key, 0, 5, &n)) return e;
      return Unsupported(key, "token log probabilities are not available");
    } else if (key == "suffix") {
      if (!v.is_string()) return WrongType(key, "a string");
      if (!v.get_ref<const std::string&>().empty()) {
        return Unsupported(key, "inserting text before a suffix is not available");
      }
    } else {
      return Invalid(absl::StrCat("Unrecognized request argument supplied: ", key), key,
                     "unknown_parameter");
    }
  }
  if (!body.contains("prompt") || body["prompt"].is_null()) {
    return Invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter");
  }
  return Finish(body, out, stream_options_seen, max_tokens_set, max_tokens);
}

std::optional<Error> ParseBody(const http::Request& req, Json* body) {
  if (req.method != "POST") {
    return Error{405,
                 absl::StrCat("Method ", req.method.substr(0, 16), " is not allowed: use POST."),
                 "invalid_request_error", "", "method_not_allowed"};
  }
  auto it = req.headers.find("content-type");
  if (it == req.headers.end() || !absl::StartsWithIgnoreCase(it->second, "application/json")) {
    return Error{415, "The body must be JSON, sent with 'Content-Type: application/json'.",
                 "invalid_request_error", "", "unsupported_media_type"};
  }
  // Depth-limited: see common/json_limits.h.
  auto parsed = ParseJson(req.body);
  if (!parsed.ok()) {
    if (absl::Status depth = CheckJsonDepth(req.body); !depth.ok()) {
      return Invalid(absl::StrCat("request body: ", depth.message()), "", "json_too_deep");
    }
    return Invalid(
        "We could not parse the JSON body of your request. The OpenAI API expects a JSON "
        "payload.",
        "", "invalid_json");
  }
  if (!parsed->is_object()) {
    return Invalid("The JSON body must be an object.", "", "invalid_json");
  }
  *body = *std::move(parsed);
  return std::nullopt;
}

Error ErrorForGrpc(const grpc::Status& status) {
  const std::string& m = status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      return Error{400, m, "invalid_request_error", "", ""};
    case grpc::StatusCode::NOT_FOUND:
      // The model is offered, only not at or under the request's price cap (router.cc).
      if (absl::StrContains(m, "price cap")) {
        return Error{400, m, "invalid_request_error", "", "price_over_cap"};
      }
      return Error{404, m, "invalid_request_error", "model", "model_not_found"};
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return Error{401, m, "invalid_request_error", "", "invalid_api_key"};
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return Error{429, m, "rate_limit_error", "", "rate_limit_exceeded"};
    case grpc::StatusCode::UNAVAILABLE:
      return Error{503, m, "server_error", "", "service_unavailable"};
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return Error{504, m, "server_error", "", "timeout"};
    default:
      return Error{500, m, "server_error", "", ""};
  }
}

}  // namespace switchyard::gateway::openai
