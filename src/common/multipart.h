// multipart/form-data bodies (RFC 7578), as the Livepeer AI API's image endpoints take them.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace switchyard::http {

struct FormPart {
  std::string filename;      // empty for plain fields
  std::string content_type;  // the part's Content-Type, if it had one
  std::string data;
};

// Parses `body` given the request's Content-Type header. INVALID_ARGUMENT (with what is wrong)
// for a missing boundary, a malformed part or a missing final boundary. A repeated field keeps
// its first value.
absl::StatusOr<std::map<std::string, FormPart>> ParseMultipartForm(const std::string& content_type,
                                                                   const std::string& body);

}  // namespace switchyard::http
