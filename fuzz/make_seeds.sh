#!/usr/bin/env bash
# Regenerates the generated seeds of fuzz/corpus/ (fuzz/README.md). Needs the ffmpeg CLI and
# protoc (Debian's ffmpeg and protobuf-compiler, both in scripts/install-deps). Files named
# regress-* are regression inputs from findings, added by hand; this script leaves them alone.
# The output is deterministic for a given FFmpeg (-fflags +bitexact, fixed test sources).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
c="$root/fuzz/corpus"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }
mkdir -p "$c"/{api_keys,audio_decode,config,http_request,image_decode,livepeer_json,multipart,request_validators,video_segment}

# --- image_decode: tiny PNGs and JPEGs in the pixel formats decoders produce, and one image over
# the 512x512 cap (compresses to a few KB).
src="testsrc2=size=12x10:rate=1"
ff -f lavfi -i "$src" -frames:v 1 -pix_fmt rgb24 "$c/image_decode/rgb24.png"
ff -f lavfi -i "$src" -frames:v 1 -pix_fmt gray "$c/image_decode/gray.png"
ff -f lavfi -i "$src" -frames:v 1 -pix_fmt rgba "$c/image_decode/rgba.png"
ff -f lavfi -i "$src" -frames:v 1 -pix_fmt pal8 "$c/image_decode/pal8.png"
ff -f lavfi -i "$src" -frames:v 1 -pix_fmt rgb48be "$c/image_decode/rgb48.png"
ff -f lavfi -i "$src" -frames:v 1 -pix_fmt ya8 "$c/image_decode/gray-alpha.png"
ff -f lavfi -i "$src" -frames:v 1 -pix_fmt yuvj420p "$c/image_decode/yuv420.jpg"
ff -f lavfi -i "$src" -frames:v 1 -pix_fmt yuvj444p "$c/image_decode/yuv444.jpg"
ff -f lavfi -i "$src" -frames:v 1 -pix_fmt gray "$c/image_decode/gray.jpg"
ff -f lavfi -i "color=black:size=600x600" -frames:v 1 -pix_fmt gray "$c/image_decode/over-cap.png"

# --- audio_decode: short clips in the containers and codecs audio-to-text takes.
asrc="sine=frequency=440:sample_rate=8000:duration=0.1"
ff -f lavfi -i "$asrc" -c:a pcm_s16le "$c/audio_decode/mono-s16.wav"
ff -f lavfi -i "sine=frequency=300:sample_rate=11025:duration=0.05" -ac 2 -c:a pcm_u8 \
  "$c/audio_decode/stereo-u8.wav"
ff -f lavfi -i "$asrc" -c:a pcm_f32le "$c/audio_decode/mono-f32.wav"
ff -f lavfi -i "$asrc" -c:a flac "$c/audio_decode/mono.flac"
ff -f lavfi -i "$asrc" -c:a libmp3lame -b:a 8k "$c/audio_decode/mono.mp3"
ff -f lavfi -i "$asrc" -c:a aac -b:a 16k -f adts "$c/audio_decode/mono.aac"
ff -f lavfi -i "$asrc" -c:a aac -b:a 16k -movflags +faststart "$c/audio_decode/mono.m4a"
ff -f lavfi -i "sine=frequency=440:sample_rate=16000:duration=0.1" -c:a libopus -b:a 8k \
  "$c/audio_decode/mono.opus"
ff -f lavfi -i "$asrc" -c:a libvorbis -q:a 0 "$c/audio_decode/mono.ogg"

# --- video_segment: few-frame 64x48 segments, as a live stream's are, with and without audio.
vsrc="testsrc2=size=64x48:rate=10"
tone="sine=frequency=440:sample_rate=16000"
x264=(-c:v libx264 -preset ultrafast -g 3 -bf 0 -pix_fmt yuv420p -fflags +bitexact)
ff -f lavfi -i "$vsrc" -frames:v 3 "${x264[@]}" -f mpegts "$c/video_segment/h264.ts"
ff -f lavfi -i "$vsrc" -f lavfi -i "$tone" -frames:v 3 -t 0.3 "${x264[@]}" -c:a aac -b:a 16k \
  -shortest -f mpegts "$c/video_segment/h264-aac.ts"
ff -f lavfi -i "$vsrc" -frames:v 3 "${x264[@]}" -movflags +faststart "$c/video_segment/h264.mp4"
ff -f lavfi -i "$vsrc" -frames:v 3 "${x264[@]}" -movflags +frag_keyframe+empty_moov+default_base_moof \
  "$c/video_segment/h264-fragmented.mp4"
ff -f lavfi -i "$vsrc" -frames:v 3 -c:v libx265 -preset ultrafast -x265-params log-level=none \
  -pix_fmt yuv420p -fflags +bitexact -f mpegts "$c/video_segment/hevc.ts"
# Cut mid-GOP: the first frames are not a keyframe.
ff -f lavfi -i "$vsrc" -frames:v 6 -c:v libx264 -preset ultrafast -g 4 -bf 0 -fflags +bitexact \
  -f mpegts "$tmp/long.ts"
ff -ss 0.1 -i "$tmp/long.ts" -c copy -f mpegts "$c/video_segment/mid-gop.ts"

# --- multipart: Content-Type line, then the body.
crlf() { printf '%s\r\n' "$@"; }
{
  printf 'multipart/form-data; boundary=XyZ\n'
  crlf '--XyZ' 'Content-Disposition: form-data; name="model_id"' '' 'esrgan-slim-x4'
  crlf '--XyZ' 'Content-Disposition: form-data; name="image"; filename="a.png"' \
    'Content-Type: image/png' '' 'PNGDATA'
  printf -- '--XyZ--\r\n'
} >"$c/multipart/two-parts"
{
  printf 'Multipart/Form-Data; charset=utf-8; boundary="quoted boundary"\n'
  printf 'preamble\r\n'
  crlf '--quoted boundary' 'content-disposition: form-data; name=prompt' '' 'a cat' \
    '--quoted boundary' 'Content-Disposition: form-data; name="prompt"' '' 'repeated'
  printf -- '--quoted boundary--'
} >"$c/multipart/quoted-repeated"
{
  printf 'multipart/form-data; boundary=b\n'
  crlf '--b' 'Content-Disposition: form-data; name="x"' '' 'no final boundary'
} >"$c/multipart/unterminated"

# --- livepeer_json: "METHOD PATH", headers, empty line, body.
lp="$c/livepeer_json"
req() {  # req FILE "METHOD PATH" CONTENT-TYPE BODY [EXTRA-HEADER]
  { printf '%s\ncontent-type: %s\n' "$2" "$3"; [ -n "${5:-}" ] && printf '%s\n' "$5"
    printf '\n%s' "$4"; } >"$lp/$1"
}
req text-to-image 'POST /text-to-image' application/json \
  '{"model_id":"sd","prompt":"a cat|a dog","width":512,"height":512,"seed":7,"guidance_scale":7.5,"num_images_per_prompt":1,"safety_check":true}'
req text-to-image-bad-types 'POST /text-to-image' application/json \
  '{"model_id":1,"prompt":null,"width":"x","height":1.5,"seed":1e30,"safety_check":"yes"}'
req llm-stream 'POST /llm' application/json \
  '{"model":"m","messages":[{"role":"user","content":"Hi"}],"stream":true,"max_tokens":16,"temperature":0.2,"top_p":0.9,"top_k":5}'
req llm 'POST /llm' application/json '{"model":"m","messages":[{"role":"system","content":"x"},{"role":"user","content":"y"}]}'
req text-to-speech 'POST /text-to-speech' 'application/json; charset=utf-8' \
  '{"model_id":"tts","text":"hello","description":"a voice"}'
req not-json 'POST /text-to-speech' application/json '{"model_id": '
req not-object 'POST /llm' application/json '[1,2,3]'
mp() {  # mp FILE PATH FIELDS... (name=value; a name starting with @ is a file part)
  local file="$1" path="$2"; shift 2
  { printf 'POST %s\ncontent-type: multipart/form-data; boundary=B0\n' "$path"
    [ "$file" = image-to-video-async ] && printf 'prefer: respond-async\n'
    printf 'x-request-id: fuzz-1\n\n'
    for f in "$@"; do
      local n="${f%%=*}" v="${f#*=}"
      if [ "${n#@}" != "$n" ]; then
        crlf '--B0' "Content-Disposition: form-data; name=\"${n#@}\"; filename=\"f\"" \
          'Content-Type: application/octet-stream' '' "$v"
      else
        crlf '--B0' "Content-Disposition: form-data; name=\"$n\"" '' "$v"
      fi
    done
    printf -- '--B0--\r\n'; } >"$lp/$file"
}
mp upscale /upscale model_id=esrgan-slim-x4 @image=PNG prompt=sharp seed=3 safety_check=true
mp image-to-image /image-to-image model_id=sd @image=PNG prompt=cat strength=0.5 \
  guidance_scale=7 image_guidance_scale=1.5 num_inference_steps=20 num_images_per_prompt=2
mp image-to-video /image-to-video model_id=svd @image=PNG width=512 height=256 fps=6 \
  motion_bucket_id=127 noise_aug_strength=0.02
mp image-to-video-async /image-to-video model_id=svd @image=PNG
mp segment-anything-2 /segment-anything-2 model_id=sam2 @image=PNG 'point_coords=[[1,2],[3,4]]' \
  'point_labels=[1,0]' 'box=[0,0,8,8]' multimask_output=false
mp audio-to-text /audio-to-text model_id=whisper @audio=RIFF return_timestamps=word
mp image-to-text /image-to-text model_id=blip @image=PNG prompt=what
mp upscale-bad-ints /upscale model_id=x @image=PNG seed=abc num_inference_steps=-1 safety_check=maybe
printf 'POST /image-to-video/result\ncontent-type: application/json\n\n{"request_id":"0123"}' \
  >"$lp/image-to-video-result"
printf 'GET /stream/0123456789abcdef/video.mp4\n\n' >"$lp/stream-get"
printf 'GET /upscale\n\n' >"$lp/wrong-method"
printf 'POST /upscale\ncontent-type: text/plain\n\nx' >"$lp/wrong-type"
printf 'POST /live-video-to-video\n\n' >"$lp/live-video"

# --- request_validators: one byte choosing the request (value % 7), then the message; 6: a
# model's options JSON.
rv="$c/request_validators"
enc() {  # enc FILE SELECTOR MESSAGE TEXT
  { printf "\\x$(printf %02x "$2")"
    printf '%s' "$4" | protoc --proto_path="$root/proto" --encode="switchyard.v1.$3" \
      switchyard/v1/gateway.proto; } >"$rv/$1"
}
enc text-to-image 0 TextToImageRequest \
  'model_id: "sd" prompt: "a | b" width: 512 height: 256 num_inference_steps: 20 guidance_scale: 3 num_images_per_prompt: 2 seed: 5 loras: "{\"a\": 0.5}"'
enc image-to-image 1 ImageToImageRequest \
  'model_id: "sd" prompt: "p" image: "PNG" strength: 0.5 guidance_scale: 1 image_guidance_scale: 1 num_inference_steps: 10'
enc image-to-video 2 ImageToVideoRequest \
  'model_id: "svd" image: "PNG" width: 256 height: 128 fps: 8 motion_bucket_id: 3 noise_aug_strength: 0.1 num_inference_steps: 5'
enc segment-anything-2 3 SegmentAnything2Request \
  'model_id: "sam" image: "PNG" point_coords: [1, 2, 3, 4] point_labels: [0, 1] box: [0, 0, 5, 5] multimask_output: false'
enc llm 4 LLMRequest \
  'model: "m" messages { role: "system" content: "be brief" } messages { role: "user" content: "hi" } temperature: 0.7 max_tokens: 32 top_p: 0.9 top_k: 4'
enc llm-greedy 4 LLMRequest 'model: "m" messages { role: "user" content: "hi" } temperature: 0'
enc audio-to-text 5 AudioToTextRequest 'model_id: "w" audio: "RIFF" return_timestamps: "word"'
printf '\x06{"max_width": 1024, "max_images": 2, "default_width": 512, "sample_rate": 16000, "channels": 2, "max_audio_seconds": 30.5, "max_text_chars": 100, "max_tokens": 64, "max_context_tokens": 512, "seed": 3, "eos_token_id": 2}' \
  >"$rv/model-options"
printf '\x06{"max_width": -8, "sample_rate": "x", "max_tokens": 1e9}' >"$rv/model-options-bad"

# --- config: 'G' + a gateway config, 'O' + an orchestrator config.
for f in "$root"/configs/gateway.json; do { printf G; cat "$f"; } >"$c/config/gateway.json"; done
{ printf O; cat "$root/configs/orchestrator-1.json"; } >"$c/config/orchestrator.json"
{ printf O; cat <<'JSON'; } >"$c/config/orchestrator-models.json"
{"node_id": "o", "listen": "127.0.0.1:0", "gateways": ["127.0.0.1:50051"],
 "models": [
  {"id": "up", "pipeline": "upscale", "path": "m.pt", "max_input_pixels": 65536},
  {"id": "t2i", "pipeline": "text-to-image", "path": "t.pt",
   "options": {"max_width": 1024, "max_images": 2, "default_width": 512}},
  {"id": "asr", "pipeline": "audio-to-text", "path": "a.pt",
   "options": {"sample_rate": 16000, "channels": 1, "max_audio_seconds": 60}},
  {"id": "tts", "pipeline": "text-to-speech", "path": "s.pt", "options": {"max_text_chars": 100}},
  {"id": "llm", "pipeline": "llm", "path": "l.pt",
   "options": {"max_tokens": 64, "max_context_tokens": 512, "seed": 1, "eos_token_id": 2}}],
 "transcode": {"enabled": true, "capacity": 1, "max_renditions": 4}}
JSON

# --- api_keys: a keys file.
cat >"$c/api_keys/keys.json" <<'JSON'
{"keys": [
  {"id": "app-1", "sha256": "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08",
   "rate_per_second": 5, "burst": 10, "max_concurrent": 2},
  {"id": "app-2", "sha256": "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"}]}
JSON
printf '{"keys": [{"id": "x", "sha256": "00"}]}' >"$c/api_keys/bad-hash.json"

# --- http_request: raw requests to the test server's routes (/echo, /files/*, /events, /throws).
hr="$c/http_request"
printf 'GET /echo?x=1 HTTP/1.1\r\nHost: a\r\nX-Mixed-Case: V\r\n\r\n' >"$hr/get"
printf 'POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello' >"$hr/post-length"
printf 'POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n' \
  >"$hr/post-chunked"
printf 'GET /echo HTTP/1.1\r\nHost: a\r\n\r\nGET /files/a/b HTTP/1.1\r\nHost: a\r\n\r\n' \
  >"$hr/pipelined"
printf 'GET /events HTTP/1.1\r\nHost: a\r\n\r\n' >"$hr/events-chunked"
printf 'GET /events HTTP/1.0\r\n\r\n' >"$hr/events-http10"
printf 'GET /throws HTTP/1.1\r\nHost: a\r\n\r\n' >"$hr/throws"
printf 'GET /nothing HTTP/1.1\r\n\r\n' >"$hr/not-found"
printf 'POST /echo HTTP/1.1\r\nContent-Length: 999999999\r\n\r\nx' >"$hr/over-limit"
printf 'GARBAGE\r\n\r\n' >"$hr/malformed"
echo "seeds written under $c ($(du -sk "$c" | cut -f1) KB)"
