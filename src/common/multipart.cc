#include "common/multipart.h"

#include <vector>
#include "absl/strings/string_view.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace switchyard::http {
namespace {

// The value of `param` in a header value like `form-data; name="image"; filename="a.png"`.
std::string Param(absl::string_view header, absl::string_view param) {
  for (absl::string_view piece : absl::StrSplit(header, ';')) {
    piece = absl::StripAsciiWhitespace(piece);
    const size_t eq = piece.find('=');
    if (eq == absl::string_view::npos) continue;
    if (!absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(piece.substr(0, eq)), param)) continue;
    absl::string_view value = absl::StripAsciiWhitespace(piece.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    return std::string(value);
  }
  return "";
}

}  // namespace

absl::StatusOr<std::map<std::string, FormPart>> ParseMultipartForm(const std::string& content_type,
                                                                   const std::string& body) {
  if (!absl::StartsWithIgnoreCase(absl::StripLeadingAsciiWhitespace(content_type),
                                  "multipart/form-data")) {
    return absl::InvalidArgumentError("the body must be multipart/form-data");
  }
  const std::string boundary = Param(content_type, "boundary");
  if (boundary.empty() || boundary.size() > 200) {
    return absl::InvalidArgumentError("multipart/form-data without a boundary");
  }
  const std::string delimiter = "--" + boundary;
  std::map<std::string, FormPart> parts;
  size_t pos = body.find(delimiter);
  if (pos == std::string::npos) {
    return absl::InvalidArgumentError("multipart body does not contain its boundary");
  }
  for (int count = 0;; ++count) {
    pos += delimiter.size();
    if (body.compare(pos, 2, "--") == 0) return parts;  // the final boundary
    if (body.compare(pos, 2, "\r\n") != 0) {
      return absl::InvalidArgumentError("malformed multipart boundary line");
    }
    pos += 2;
    const size_t headers_end = body.find("\r\n\r\n", pos);
    if (headers_end == std::string::npos) {
      return absl::InvalidArgumentError("multipart part without a blank line after its headers");
    }
    FormPart part;
    std::string name;
    for (absl::string_view line :
         absl::StrSplit(absl::string_view(body).substr(pos, headers_end - pos), "\r\n")) {
      const size_t colon = line.find(':');
      if (colon == absl::string_view::npos) continue;
      const absl::string_view key = absl::StripAsciiWhitespace(line.substr(0, colon));
      const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
      if (absl::EqualsIgnoreCase(key, "content-disposition")) {
        name = Param(value, "name");
        part.filename = Param(value, "filename");
      } else if (absl::EqualsIgnoreCase(key, "content-type")) {
        part.content_type = std::string(value);
      }
    }
    const size_t data_start = headers_end + 4;
    const size_t next = body.find("\r\n" + delimiter, data_start);
    if (next == std::string::npos) {
      return absl::InvalidArgumentError("multipart body ends without its final boundary");
    }
    if (name.empty()) {
      return absl::InvalidArgumentError("a multipart part has no name in Content-Disposition");
    }
    part.data = body.substr(data_start, next - data_start);
    parts.emplace(std::move(name), std::move(part));
    pos = next + 2;
    if (count > 1000) return absl::InvalidArgumentError("too many multipart parts");
  }
}

}  // namespace switchyard::http
