// The Livepeer AI gateway HTTP API (../shared/specs/livepeer-ai-gateway.openapi.yaml, v0.14.1) on
// the gateway's HTTP port: the same paths, JSON and multipart bodies, field names and defaults,
// response shapes, error bodies ({"detail": {"msg"}}; 422 {"detail": [{"loc", "msg", "type"}]}) and
// codes, so a Livepeer AI client works by changing its base URL. Each request becomes a call on the
// gateway's own gRPC API through an in-process channel, so an HTTP job is routed exactly once, by
// the same router, with the same retries and errors as a gRPC one.
//
// Paths: POST /text-to-image (JSON), /image-to-image, /upscale, /image-to-video, /audio-to-text,
// /segment-anything-2, /image-to-text (multipart), /llm, /text-to-speech (JSON). Images and audio
// come back as data URLs; videos as URLs this gateway serves (GET /stream/<id>/<name>, kept in
// memory for an hour). /llm with "stream": true answers server-sent events as the tokens arrive,
// ending with `data: [DONE]`. /image-to-video with "Prefer: respond-async" answers 202
// {"request_id"} and POST /image-to-video/result {"request_id"} gives the result (go-livepeer's
// async mode). /live-video-to-video starts a session that reads and writes Livepeer trickle
// channels (live_video.h), each segment run through Gateway.LiveVideoSegment. docs/http-api.md
// has it all.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "common/http_server.h"

namespace switchyard::gateway {

class ApiKeyAuth;
class LiveVideoSessions;
class PeerGateways;

// `live` runs the /live-video-to-video sessions (the owner stops them at shutdown); when null, the
// routes own their own, which end when the routes are destroyed.
// `auth`: the gateway's API keys (null: none configured). With keys, image-to-video's async
// results and the videos served at /stream/... belong to the key whose request made them (its
// SHA-256): asked for with another key, or none, they are 404 like unknown ids. Only
// ApiKeyAuth::PresentedKey is used (no quota is taken); it must outlive the routes.
// `peers` (state.peers; may be null): ids carry this gateway's id, ids another gateway holds are
// fetched from it, and GET /internal/v1/... serves this gateway's to them (peer_gateways.h).
std::map<std::string, http::Handler> LivepeerApiRoutes(
    std::shared_ptr<grpc::Channel> gateway, std::shared_ptr<LiveVideoSessions> live = nullptr,
    const ApiKeyAuth* auth = nullptr, std::shared_ptr<PeerGateways> peers = nullptr);

// The HTTP status the Livepeer API uses for a gRPC outcome.
int HttpStatusForGrpc(grpc::StatusCode code);

}  // namespace switchyard::gateway
