// The Livepeer AI HTTP API's request bodies: JSON and multipart forms read with FastAPI's
// (pydantic's) rules and error shapes, and the fields that map onto a pipeline's request proto.
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/json_limits.h"
#include "gateway/api/livepeer_api_internal.h"

namespace switchyard::gateway::livepeer {

http::Response HttpError(int status, const std::string& message) {
  return http::Json(status, Dump(Json{{"detail", {{"msg", message}}}}));
}

std::string Dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Params::Params(std::map<std::string, http::FormPart> form)
    : is_form_(true), form_(std::move(form)) {}

Params::Params(Json body) : is_form_(false), json_(std::move(body)) {}

bool Params::Has(const std::string& name) const {
  return is_form_ ? form_.count(name) > 0 : json_.contains(name) && !json_[name].is_null();
}

const Json* Params::Raw(const std::string& name) const {
  if (is_form_ || !Has(name)) return nullptr;
  return &json_[name];
}

void Params::Refuse(std::string message) {
  if (refusal_.empty()) refusal_ = std::move(message);
}

void Params::Fail(Json loc, const std::string& msg, const std::string& type) {
  Json full = Json::array({"body"});
  if (loc.is_array()) {
    for (auto& l : loc) full.push_back(l);
  } else {
    full.push_back(loc);
  }
  errors_.push_back({{"loc", full}, {"msg", msg}, {"type", type}});
}

http::Response Params::Error() const {
  if (!refusal_.empty()) return HttpError(400, refusal_);
  return http::Json(422, Dump(Json{{"detail", errors_}}));
}

std::optional<std::string> Params::Str(const std::string& name, bool required) {
  if (!Has(name)) {
    if (required) Fail(name, "Field required", "missing");
    return std::nullopt;
  }
  if (is_form_) return form_[name].data;
  const Json& v = json_[name];
  if (!v.is_string()) {
    Fail(name, "Input should be a valid string", "string_type");
    return std::nullopt;
  }
  return v.get<std::string>();
}

std::optional<std::string> Params::File(const std::string& name, bool required) {
  auto it = form_.find(name);
  if (it == form_.end() || it->second.data.empty()) {
    if (required) Fail(name, "Field required", "missing");
    return std::nullopt;
  }
  return std::move(it->second.data);
}

std::optional<int64_t> Params::Int(const std::string& name, int64_t min, int64_t max) {
  if (!Has(name)) return std::nullopt;
  int64_t value = 0;
  if (is_form_) {
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(form_[name].data), &value)) {
      Fail(name, "Input should be a valid integer, unable to parse string as an integer",
           "int_parsing");
      return std::nullopt;
    }
  } else {
    const Json& v = json_[name];
    if (v.is_number_integer()) {
      value = v.get<int64_t>();
    } else if (v.is_number_float() && std::trunc(v.get<double>()) == v.get<double>() &&
               std::abs(v.get<double>()) < 9e18) {
      value = static_cast<int64_t>(v.get<double>());
    } else {
      Fail(name, "Input should be a valid integer", "int_type");
      return std::nullopt;
    }
  }
  if (value < min) {
    Fail(name, absl::StrCat("Input should be greater than or equal to ", min),
         "greater_than_equal");
    return std::nullopt;
  }
  if (value > max) {
    Fail(name, absl::StrCat("Input should be less than or equal to ", max), "less_than_equal");
    return std::nullopt;
  }
  return value;
}

std::optional<double> Params::Number(const std::string& name) {
  if (!Has(name)) return std::nullopt;
  if (is_form_) {
    double value = 0;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(form_[name].data), &value) ||
        !std::isfinite(value)) {
      Fail(name, "Input should be a valid number, unable to parse string as a number",
           "float_parsing");
      return std::nullopt;
    }
    return value;
  }
  const Json& v = json_[name];
  if (!v.is_number()) {
    Fail(name, "Input should be a valid number", "float_type");
    return std::nullopt;
  }
  return v.get<double>();
}

std::optional<bool> Params::Bool(const std::string& name) {
  if (!Has(name)) return std::nullopt;
  if (is_form_) {
    // pydantic's accepted spellings.
    const std::string v = absl::AsciiStrToLower(absl::StripAsciiWhitespace(form_[name].data));
    if (v == "true" || v == "1" || v == "yes" || v == "on" || v == "t" || v == "y") return true;
    if (v == "false" || v == "0" || v == "no" || v == "off" || v == "f" || v == "n") {
      return false;
    }
    Fail(name, "Input should be a valid boolean, unable to interpret input", "bool_parsing");
    return std::nullopt;
  }
  const Json& v = json_[name];
  if (!v.is_boolean()) {
    Fail(name, "Input should be a valid boolean", "bool_type");
    return std::nullopt;
  }
  return v.get<bool>();
}

std::optional<std::string> Header(const http::Request& req, const std::string& name) {
  auto it = req.headers.find(name);
  if (it == req.headers.end()) return std::nullopt;
  return it->second;
}

namespace {

std::optional<Params> ParseForm(const std::string& content_type, const std::string& body,
                                const http::Reply& reply) {
  auto form = http::ParseMultipartForm(content_type, body);
  if (!form.ok()) {
    reply(HttpError(400, std::string(form.status().message())));
    return std::nullopt;
  }
  return Params(*std::move(form));
}

std::optional<Params> ParseJsonObject(const std::string& text, const http::Reply& reply) {
  // Depth-limited: a body nested a million levels parses, and then dump() or a copy of it recurses
  // once per level off the end of the stack.
  auto parsed = ParseJson(text);
  if (!parsed.ok()) {
    if (absl::Status depth = CheckJsonDepth(text); !depth.ok()) {
      reply(HttpError(400, absl::StrCat("request body: ", depth.message())));
      return std::nullopt;
    }
    reply(http::Json(
        422,
        Json{{"detail",
              {{{"loc", {"body", 0}}, {"msg", "JSON decode error"}, {"type", "json_invalid"}}}}}
            .dump()));
    return std::nullopt;
  }
  Json body = *std::move(parsed);
  if (!body.is_object()) {
    reply(http::Json(
        422, Json{{"detail",
                   {{{"loc", {"body"}},
                     {"msg", "Input should be a valid dictionary or object to extract fields from"},
                     {"type", "model_attributes_type"}}}}}
                 .dump()));
    return std::nullopt;
  }
  return Params(std::move(body));
}

}  // namespace

std::optional<Params> ReadBody(Body body, const http::Request& req, const http::Reply& reply) {
  if (req.method != "POST") {
    reply(HttpError(405, "use POST"));
    return std::nullopt;
  }
  const char* type = body == Body::kForm ? "multipart/form-data" : "application/json";
  const std::string content_type = Header(req, "content-type").value_or("");
  if (!absl::StartsWithIgnoreCase(content_type, type)) {
    reply(HttpError(415, absl::StrCat("the body must be ", type)));
    return std::nullopt;
  }
  return body == Body::kForm ? ParseForm(content_type, req.body, reply)
                             : ParseJsonObject(req.body, reply);
}

void ReadFields(Params& params, std::span<const Field> fields, google::protobuf::Message* request) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection& reflection = *request->GetReflection();
  for (const Field& f : fields) {
    const FieldDescriptor* field = request->GetDescriptor()->FindFieldByName(f.name);
    if (field == nullptr) continue;  // CheckFields finds these in the tests
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING: {
        auto v = field->type() == FieldDescriptor::TYPE_BYTES ? params.File(f.name, f.required)
                                                              : params.Str(f.name, f.required);
        if (v) reflection.SetString(request, field, *std::move(v));
        break;
      }
      case FieldDescriptor::CPPTYPE_INT32:
        if (auto v = params.Int(f.name, f.min, std::numeric_limits<int32_t>::max())) {
          reflection.SetInt32(request, field, static_cast<int32_t>(*v));
        }
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        if (auto v = params.Int(f.name, f.min, std::numeric_limits<int64_t>::max())) {
          reflection.SetInt64(request, field, *v);
        }
        break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        if (auto v = params.Number(f.name)) {
          reflection.SetFloat(request, field, static_cast<float>(*v));
        }
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        if (auto v = params.Bool(f.name)) reflection.SetBool(request, field, *v);
        break;
      default:
        break;  // CheckFields refuses other types
    }
  }
}

absl::Status CheckFields(std::span<const Field> fields,
                         const google::protobuf::Descriptor& request) {
  using google::protobuf::FieldDescriptor;
  for (const Field& f : fields) {
    const FieldDescriptor* field = f.name == nullptr ? nullptr : request.FindFieldByName(f.name);
    if (field == nullptr) {
      return absl::InternalError(absl::StrCat(request.full_name(), " has no field '",
                                              f.name == nullptr ? "" : f.name, "'"));
    }
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
      case FieldDescriptor::CPPTYPE_INT32:
      case FieldDescriptor::CPPTYPE_INT64:
      case FieldDescriptor::CPPTYPE_FLOAT:
      case FieldDescriptor::CPPTYPE_BOOL:
        if (field->is_repeated()) {
          return absl::InternalError(absl::StrCat(field->full_name(), " is repeated"));
        }
        break;
      default:
        return absl::InternalError(
            absl::StrCat(field->full_name(), " is a ", field->cpp_type_name(), ": not read"));
    }
  }
  return absl::OkStatus();
}

}  // namespace switchyard::gateway::livepeer
