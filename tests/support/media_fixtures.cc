#include "support/media_fixtures.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>

#include "common/media/ffmpeg_util.h"

namespace switchyard::testing {
namespace fs = std::filesystem;

TempDir::TempDir() {
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    fs::path p = fs::temp_directory_path() /
                 ("switchyard-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::error_code ec;
    if (fs::create_directory(p, ec)) {
      path_ = p;
      return;
    }
  }
  throw std::runtime_error("cannot create a temporary directory");
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

int RunCommand(const std::string& command, std::string* log) {
  std::string full = command + " 2>&1";
  FILE* pipe = ::popen(full.c_str(), "r");
  if (pipe == nullptr) return -1;
  std::array<char, 4096> buf;
  std::string out;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  int status = ::pclose(pipe);
  if (log != nullptr) *log = out;
  if (status == -1) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const fs::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::string MakeTestImage(const TempDir& dir, int width, int height, const std::string& format) {
  fs::path out =
      dir.path() / ("image-" + std::to_string(width) + "x" + std::to_string(height) + "." + format);
  std::ostringstream cmd;
  cmd << "ffmpeg -nostdin -loglevel error -y -f lavfi -i testsrc2=size=" << width << "x" << height
      << ":rate=1 -frames:v 1 " << out.string();
  std::string log;
  if (RunCommand(cmd.str(), &log) != 0) throw std::runtime_error("ffmpeg failed: " + log);
  return ReadFile(out);
}

std::string RenderTextPng(const TempDir& dir, const std::vector<std::string>& lines,
                          int font_size) {
  if (!fs::exists(kTestFontFile)) {
    throw std::runtime_error(std::string(kTestFontFile) + " is missing (fonts-dejavu-core)");
  }
  static int counter = 0;
  const int n = counter++;
  size_t longest = 1;
  for (const std::string& line : lines) longest = std::max(longest, line.size());
  const int line_height = font_size * 8 / 5;
  const int margin = font_size;
  // DejaVu Sans glyphs are at most ~0.65 em wide for ASCII; round sizes up to even.
  const int width = (2 * margin + static_cast<int>(longest) * font_size * 2 / 3 + 1) / 2 * 2;
  const int height = (2 * margin + static_cast<int>(lines.size()) * line_height + 1) / 2 * 2;
  std::ostringstream filters;
  for (size_t i = 0; i < lines.size(); ++i) {
    // The text goes through a file: no escaping of the filter graph's special characters.
    const fs::path text = dir.path() / ("text-" + std::to_string(n) + "-" + std::to_string(i));
    WriteFile(text, lines[i]);
    if (i > 0) filters << ",";
    filters << "drawtext=fontfile=" << kTestFontFile << ":textfile=" << text.string()
            << ":expansion=none:fontcolor=black:fontsize=" << font_size << ":x=" << margin
            << ":y=" << margin + static_cast<int>(i) * line_height;
  }
  const fs::path out = dir.path() / ("text-" + std::to_string(n) + ".png");
  std::ostringstream cmd;
  cmd << "ffmpeg -nostdin -loglevel error -y -f lavfi -i color=c=white:s=" << width << "x" << height
      << " -frames:v 1 -vf '" << filters.str() << "' " << out.string();
  std::string log;
  if (RunCommand(cmd.str(), &log) != 0) throw std::runtime_error("ffmpeg failed: " + log);
  return ReadFile(out);
}

std::string MakeTestSegment(const TempDir& dir, const SegmentSpec& spec) {
  static int counter = 0;
  std::string ext = spec.container == "mp4" ? "mp4" : "ts";
  fs::path out = dir.path() / ("segment-" + std::to_string(counter++) + "." + ext);
  std::ostringstream cmd;
  cmd << "ffmpeg -nostdin -loglevel error -y -f lavfi -i testsrc2=size=" << spec.width << "x"
      << spec.height << ":rate=" << spec.fps;
  if (spec.audio) cmd << " -f lavfi -i sine=frequency=440:sample_rate=" << spec.audio_rate;
  cmd << " -t " << spec.seconds << " -c:v " << spec.codec
      << " -preset ultrafast -pix_fmt yuv420p -force_key_frames 'expr:gte(t,n_forced*"
      << spec.gop_seconds << ")'";
  if (spec.audio) cmd << " -c:a " << spec.audio_codec << " -b:a 64k";
  if (spec.container == "mp4") cmd << " -movflags +faststart";
  cmd << " -f " << spec.container << " " << out.string();
  std::string log;
  if (RunCommand(cmd.str(), &log) != 0) throw std::runtime_error("ffmpeg failed: " + log);
  return ReadFile(out);
}

ProbeResult ProbeVideo(const TempDir& dir, const std::string& data, const std::string& ext) {
  static int counter = 0;
  fs::path in = dir.path() / ("probe-" + std::to_string(counter++) + "." + ext);
  WriteFile(in, data);
  std::string log;
  int rc = RunCommand(
      "ffprobe -v error -select_streams v:0 -count_frames -show_entries "
      "stream=codec_name,width,height,nb_read_frames -of default=noprint_wrappers=1 " +
          in.string(),
      &log);
  ProbeResult r;
  if (rc != 0) {
    r.error = log;
    return r;
  }
  std::istringstream lines(log);
  std::string line;
  while (std::getline(lines, line)) {
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    if (key == "codec_name") r.codec = value;
    if (key == "width") r.width = std::atoi(value.c_str());
    if (key == "height") r.height = std::atoi(value.c_str());
    if (key == "nb_read_frames") r.frames = std::atoi(value.c_str());
  }
  r.ok = r.width > 0;
  if (!r.ok) r.error = "ffprobe found no video stream: " + log;
  return r;
}

std::string MakeTestImageWithPixFmt(const TempDir& dir, int width, int height,
                                    const std::string& format, const std::string& pix_fmt) {
  fs::path out = dir.path() / ("image-" + std::to_string(width) + "x" + std::to_string(height) +
                               "-" + pix_fmt + "." + format);
  std::ostringstream cmd;
  cmd << "ffmpeg -nostdin -loglevel error -y -f lavfi -i testsrc2=size=" << width << "x" << height
      << ":rate=1 -frames:v 1 -pix_fmt " << pix_fmt << " " << out.string();
  std::string log;
  if (RunCommand(cmd.str(), &log) != 0) throw std::runtime_error("ffmpeg failed: " + log);
  return ReadFile(out);
}

std::string MakeTestSegmentWithArgs(const TempDir& dir, int width, int height,
                                    const std::string& fps, double seconds,
                                    const std::string& output_args, const std::string& ext,
                                    const std::string& source) {
  static std::atomic<int> counter{0};
  fs::path out = dir.path() / ("custom-segment-" + std::to_string(counter++) + "." + ext);
  std::ostringstream cmd;
  cmd << "ffmpeg -nostdin -loglevel error -y -f lavfi -i " << source << "=size=" << width << "x"
      << height << ":rate=" << fps << " -t " << seconds << " " << output_args << " "
      << out.string();
  std::string log;
  if (RunCommand(cmd.str(), &log) != 0) throw std::runtime_error("ffmpeg failed: " + log);
  return ReadFile(out);
}

namespace {

fs::path WriteProbeInput(const TempDir& dir, const std::string& data, const std::string& ext) {
  static std::atomic<int> counter{0};
  fs::path in = dir.path() / ("probe-input-" + std::to_string(counter++) + "." + ext);
  WriteFile(in, data);
  return in;
}

}  // namespace

std::vector<ProbedFrame> ProbeFrames(const TempDir& dir, const std::string& data,
                                     const std::string& ext, std::string* error) {
  fs::path in = WriteProbeInput(dir, data, ext);
  std::string log;
  int rc = RunCommand(
      "ffprobe -v error -select_streams v:0 -show_entries frame=key_frame,pict_type,pts_time "
      "-of csv=p=0 " +
          in.string(),
      &log);
  std::vector<ProbedFrame> frames;
  if (rc != 0) {
    if (error != nullptr) *error = log;
    return frames;
  }
  // The field order of -show_entries follows ffprobe's own order: key_frame, pts_time, pict_type.
  std::istringstream lines(log);
  std::string line;
  while (std::getline(lines, line)) {
    std::vector<std::string> fields;
    std::istringstream ls(line);
    std::string field;
    while (std::getline(ls, field, ',')) fields.push_back(field);
    if (fields.size() < 3) continue;
    ProbedFrame f;
    f.key_frame = fields[0] == "1";
    f.pts_time = std::atof(fields[1].c_str());
    f.pict_type = fields[2];
    frames.push_back(f);
  }
  if (frames.empty() && error != nullptr) *error = "no frames: " + log;
  return frames;
}

std::vector<double> ProbePacketDts(const TempDir& dir, const std::string& data,
                                   const std::string& ext, const std::string& stream_spec) {
  fs::path in = WriteProbeInput(dir, data, ext);
  std::string log;
  std::vector<double> dts;
  if (RunCommand("ffprobe -v error -select_streams " + stream_spec +
                     " -show_entries packet=dts_time -of csv=p=0 " + in.string(),
                 &log) != 0) {
    return dts;
  }
  std::istringstream lines(log);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line != "N/A") dts.push_back(std::atof(line.c_str()));
  }
  return dts;
}

int ProbeStreamCount(const TempDir& dir, const std::string& data, const std::string& ext,
                     const std::string& codec_type) {
  fs::path in = WriteProbeInput(dir, data, ext);
  std::string log;
  // MPEG-TS lists its streams twice (under the program and on their own): count distinct indexes.
  if (RunCommand(
          "ffprobe -v error -show_entries stream=index,codec_type -of csv=p=0 " + in.string(),
          &log) != 0) {
    return -1;
  }
  std::istringstream lines(log);
  std::string line;
  std::set<std::string> seen;
  int count = 0;
  while (std::getline(lines, line)) {
    auto comma = line.find(',');
    if (comma == std::string::npos) continue;
    if (line.substr(comma + 1) == codec_type && seen.insert(line.substr(0, comma)).second) ++count;
  }
  return count;
}

orchestrator::RenditionSpec TestRendition(int width, int height, int64_t bitrate_bps, int fps_num,
                                          int fps_den) {
  orchestrator::RenditionSpec spec;
  spec.width = width;
  spec.height = height;
  spec.bitrate_bps = bitrate_bps;
  spec.fps_num = fps_num;
  spec.fps_den = fps_den;
  spec.preset = "ultrafast";
  return spec;
}

int Demuxed::keyframes() const {
  return static_cast<int>(std::count(video_key.begin(), video_key.end(), true));
}

std::vector<int> Demuxed::keyframe_positions() const {
  std::vector<double> sorted = video_pts;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int> positions;
  for (size_t i = 0; i < video_pts.size(); ++i) {
    if (!video_key[i]) continue;
    positions.push_back(static_cast<int>(
        std::lower_bound(sorted.begin(), sorted.end(), video_pts[i]) - sorted.begin()));
  }
  std::sort(positions.begin(), positions.end());
  return positions;
}

Demuxed Demux(const std::string& data) {
  Demuxed d;
  auto demuxer = media::OpenMemoryDemuxer(data, "mpegts,mov,mp4");
  if (!demuxer.ok()) {
    d.error = demuxer.status().ToString();
    return d;
  }
  AVFormatContext* fmt = (*demuxer)->format.get();
  for (unsigned i = 0; i < fmt->nb_streams; ++i) {
    const AVCodecParameters* par = fmt->streams[i]->codecpar;
    if (par->codec_type == AVMEDIA_TYPE_VIDEO) {
      if (d.video_streams++ == 0) {
        d.width = par->width;
        d.height = par->height;
      }
    } else if (par->codec_type == AVMEDIA_TYPE_AUDIO) {
      ++d.audio_streams;
    }
  }
  std::vector<int64_t> last(fmt->nb_streams, AV_NOPTS_VALUE);
  media::AvPacketPtr pkt(av_packet_alloc());
  for (int n = 0; n < 1'000'000; ++n) {
    const int ret = av_read_frame(fmt, pkt.get());
    if (ret == AVERROR_EOF) break;
    if (ret < 0) {
      d.error = "read failed: " + media::AvErrorString(ret);
      break;
    }
    const AVStream* st = fmt->streams[pkt->stream_index];
    int64_t& prev = last[pkt->stream_index];
    if (pkt->dts == AV_NOPTS_VALUE) {
      d.error = "stream " + std::to_string(pkt->stream_index) + " packet without a DTS";
    } else if (prev != AV_NOPTS_VALUE && pkt->dts <= prev) {
      d.error = "stream " + std::to_string(pkt->stream_index) + ": DTS " +
                std::to_string(pkt->dts) + " after " + std::to_string(prev);
    }
    if (pkt->dts != AV_NOPTS_VALUE) prev = pkt->dts;
    if (st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO) {
      d.video_dts.push_back(pkt->dts * av_q2d(st->time_base));
      d.video_pts.push_back((pkt->pts == AV_NOPTS_VALUE ? pkt->dts : pkt->pts) *
                            av_q2d(st->time_base));
      d.video_key.push_back((pkt->flags & AV_PKT_FLAG_KEY) != 0);
    } else if (st->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) {
      ++d.audio_packets;
      d.audio_dts.push_back(pkt->dts * av_q2d(st->time_base));
    }
    av_packet_unref(pkt.get());
    if (!d.error.empty()) break;
  }
  return d;
}

}  // namespace switchyard::testing
