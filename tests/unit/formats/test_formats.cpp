// File formats: memory-mapped reads, atomic writes, safetensors, GGUF and Hugging Face directories.
// Every reader is also fed broken files (truncated, absurd sizes, bad JSON, wrong types) and must throw
// cushion::Error with a message that says what and where, quickly and without allocating from bad sizes.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "base/atomic_file.h"
#include "base/error.h"
#include "base/mapped_file.h"
#include "formats/model_loader.h"
#include "formats/safetensors.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace cushion;
using namespace cushion::test;
using cushion::test::temp_dir;

namespace {

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& data) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

template <typename T>
void put(std::string& s, T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
template <typename T>
void poke(std::string& s, uint64_t at, T v) {
    std::memcpy(&s[at], &v, sizeof(T));
}

#define EXPECT_ERROR_HAS(msg, needle) \
    EXPECT_NE(std::string(msg).find(needle), std::string::npos) << "message: " << (msg) << "\nexpected: " << (needle)

// Time limit for rejecting a broken file: generous for a loaded 2-core machine, far below any big allocation.
constexpr double kQuickSeconds = 2.0;

double seconds_of(const std::function<void()>& f) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::map<std::string, at::Tensor> named_tensors(const Model& m) {
    std::map<std::string, at::Tensor> r;
    m.weights.for_each(m.config, [&](const std::string& n, const at::Tensor& t) { r[n] = t; });
    return r;
}

void expect_same_weights(const Model& a, const Model& b) {
    auto ta = named_tensors(a), tb = named_tensors(b);
    ASSERT_EQ(ta.size(), tb.size());
    for (const auto& [name, t] : ta) {
        ASSERT_TRUE(tb.count(name)) << name;
        EXPECT_EQ(t.sizes(), tb[name].sizes()) << name;
        EXPECT_TRUE(at::equal(t.to(at::kFloat), tb[name].to(at::kFloat))) << name;
    }
}

// ============================================================================================== mapped/atomic

TEST(FormatsMappedFile, MissingFileNamesPath) {
    const std::string msg = error_of([] { MappedFile f("/nonexistent/dir/model.gguf"); });
    EXPECT_ERROR_HAS(msg, "/nonexistent/dir/model.gguf");
}

TEST(FormatsMappedFile, ReadsAndChecksBounds) {
    const std::string dir = temp_dir("mapped");
    const std::string p = dir + "/x.bin";
    std::string data;
    put<uint32_t>(data, 7);
    put<uint64_t>(data, 3);
    data += "abc";
    put<uint64_t>(data, 1000);  // a string claiming 1000 bytes
    write_bytes(p, data);
    MappedFile f(p);
    EXPECT_EQ(f.size(), data.size());
    ByteReader r(f);
    EXPECT_EQ(r.read<uint32_t>("x"), 7u);
    EXPECT_EQ(r.read_string("name"), "abc");
    const std::string msg = error_of([&] { r.read_string("tensor name"); });
    EXPECT_ERROR_HAS(msg, p);
    EXPECT_ERROR_HAS(msg, "offset 23");
    EXPECT_ERROR_HAS(msg, "tensor name");
    ByteReader r2(f, 15);
    EXPECT_ERROR_HAS(error_of([&] { r2.read_string("limited", 2); }), "limit");
    EXPECT_ERROR_HAS(error_of([&] { f.check_range(UINT64_MAX - 2, 8, "wrap"); }), "wrap");

    write_bytes(dir + "/empty.bin", "");
    MappedFile e(dir + "/empty.bin");
    EXPECT_EQ(e.size(), 0u);
    ByteReader re(e);
    EXPECT_ERROR_HAS(error_of([&] { re.read<uint8_t>("byte"); }), "past the end");
}

TEST(FormatsAtomicFile, WritesAndReplaces) {
    const std::string dir = temp_dir("atomic");
    const std::string p = dir + "/a.txt";
    write_text_atomically(p, "one");
    EXPECT_EQ(read_text_file(p), "one");
    write_text_atomically(p, "two");
    EXPECT_EQ(read_text_file(p), "two");
    int n = 0;
    for (auto& e : fs::directory_iterator(dir)) n += e.exists();
    EXPECT_EQ(n, 1);
    EXPECT_ERROR_HAS(error_of([&] { read_text_file(dir + "/missing.txt"); }), "missing.txt");
}

TEST(FormatsAtomicFile, FailureAndCancelLeaveNothing) {
    const std::string dir = temp_dir("atomic-fail");
    const std::string p = dir + "/out.bin";
    EXPECT_THROW(write_atomically(p,
                                  [](const std::string& tmp) {
                                      write_bytes(tmp, "partial");
                                      throw Cancelled();
                                  }),
                 Cancelled);
    EXPECT_THROW(write_atomically(p,
                                  [](const std::string& tmp) {
                                      write_bytes(tmp, "partial");
                                      throw std::runtime_error("disk on fire");
                                  }),
                 Error);
    EXPECT_TRUE(fs::is_empty(dir));
    // An existing target survives a failed rewrite untouched.
    write_text_atomically(p, "good");
    EXPECT_THROW(write_atomically(p, [](const std::string&) { throw Error("nope"); }), Error);
    EXPECT_EQ(read_text_file(p), "good");
    int n = 0;
    for (auto& e : fs::directory_iterator(dir)) n += e.exists();
    EXPECT_EQ(n, 1);
}

// ============================================================================================== safetensors

TEST(SafetensorsTest, RoundTripAllDtypes) {
    const std::string p = temp_dir("st") + "/t.safetensors";
    at::manual_seed(1);
    std::vector<std::pair<std::string, at::Tensor>> ts = {
        {"f32", at::randn({3, 5})},
        {"f16", at::randn({4, 2}).to(at::kHalf)},
        {"bf16", at::randn({7}).to(at::kBFloat16)},
        {"i8", at::randint(-128, 127, {2, 3, 4}).to(at::kChar)},
        {"u8", at::randint(0, 255, {9}).to(at::kByte)},
        {"i32", at::randint(-100000, 100000, {6}).to(at::kInt)},
        {"i64", at::tensor({int64_t(1) << 40, int64_t(-5)}, at::kLong)},
        {"scalar", at::tensor(3.5f)},
        {"empty", at::zeros({0, 3})},
        {"transposed", at::arange(12, at::kFloat).reshape({3, 4}).t()},  // saved contiguous
    };
    save_safetensors(p, ts, {{"format", "pt"}, {"note", "hello"}});

    // The header is padded with spaces so the data starts 8-byte aligned.
    const std::string raw = read_bytes(p);
    uint64_t hlen;
    std::memcpy(&hlen, raw.data(), 8);
    EXPECT_EQ((8 + hlen) % 8, 0u);
    EXPECT_NE(raw[8 + hlen - 1], '\0');

    SafetensorsFile f(p);
    EXPECT_EQ(f.names().size(), ts.size());
    EXPECT_EQ(f.metadata().at("format"), "pt");
    EXPECT_EQ(f.metadata().at("note"), "hello");
    for (const auto& [name, t] : ts) {
        ASSERT_TRUE(f.contains(name)) << name;
        at::Tensor g = f.get(name);
        EXPECT_EQ(g.scalar_type(), t.scalar_type()) << name;
        EXPECT_EQ(g.sizes(), t.sizes()) << name;
        EXPECT_EQ(f.shape(name), t.sizes().vec()) << name;
        EXPECT_TRUE(at::equal(g, t.contiguous())) << name;
    }
    EXPECT_FALSE(f.contains("nope"));
    EXPECT_ERROR_HAS(error_of([&] { f.get("nope"); }), "nope");
    // No temporary left beside it.
    int n = 0;
    for (auto& e : fs::directory_iterator(fs::path(p).parent_path())) n += e.exists();
    EXPECT_EQ(n, 1);
}

TEST(SafetensorsTest, WriterRejectsBadInput) {
    const std::string p = temp_dir("st-bad") + "/t.safetensors";
    EXPECT_ERROR_HAS(error_of([&] { save_safetensors(p, {{"a", at::ones({2})}, {"a", at::ones({2})}}); }), "twice");
    EXPECT_ERROR_HAS(error_of([&] { save_safetensors(p, {{"c", at::ones({2}, at::kComplexFloat)}}); }), "'c'");
    EXPECT_FALSE(fs::exists(p));
}

// A safetensors file from a header string and data bytes, with the given header length field.
std::string make_st(const std::string& header, const std::string& data, int64_t hlen_override = -1) {
    std::string s;
    put<uint64_t>(s, hlen_override >= 0 ? uint64_t(hlen_override) : header.size());
    return s + header + data;
}

TEST(SafetensorsTest, BrokenFilesGiveUsefulErrors) {
    const std::string dir = temp_dir("st-broken");
    const std::string good = dir + "/good.safetensors";
    save_safetensors(good, {{"w", at::arange(16, at::kFloat).reshape({4, 4})}, {"b", at::ones({4})}});
    const std::string raw = read_bytes(good);

    auto check = [&](const std::string& name, const std::string& bytes, const std::string& needle) {
        const std::string p = dir + "/" + name + ".safetensors";
        write_bytes(p, bytes);
        std::string msg;
        const double s = seconds_of([&] { msg = error_of([&] { SafetensorsFile f(p); }); });
        EXPECT_ERROR_HAS(msg, needle) << " case " << name;
        EXPECT_ERROR_HAS(msg, p) << " case " << name;
        EXPECT_LT(s, kQuickSeconds) << name;
    };
    check("empty", "", "header length");
    check("short", raw.substr(0, 5), "header length");
    check("truncated-header", raw.substr(0, 20), "larger than the file");
    check("truncated-data", raw.substr(0, raw.size() - 10), "past the end");
    {
        std::string huge = raw;
        poke<uint64_t>(huge, 0, uint64_t(1) << 62);
        check("huge-header-length", huge, "header length");
    }
    check("offsets-past-end", make_st(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", std::string(8, 'x')),
          "data_offsets");
    check("offsets-reversed", make_st(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", std::string(8, 'x')),
          "data_offsets");
    check("shape-mismatch", make_st(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", std::string(16, 'x')),
          "shape [2, 3]");
    check("shape-overflow",
          make_st(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}})",
                  std::string(16, 'x')),
          "'w'");
    check("negative-dim", make_st(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", std::string(16, 'x')),
          "negative");
    check("bad-json", make_st(R"({"w":{"dtype":"F32",)", ""), "JSON");
    check("not-object", make_st(R"([1,2,3])", ""), "not an object");
    check("unknown-dtype", make_st(R"({"w":{"dtype":"F7","shape":[4],"data_offsets":[0,4]}})", std::string(4, 'x')),
          "unknown dtype 'F7'");
    check("missing-shape", make_st(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", std::string(4, 'x')), "shape");
    check("bad-metadata", make_st(R"({"__metadata__":{"a":1}})", ""), "__metadata__");

    // Header length over the 100 MB limit in a (sparse) file that is big enough to hold it.
    {
        const std::string p = dir + "/big.safetensors";
        {
            std::ofstream out(p, std::ios::binary);
            std::string h;
            put<uint64_t>(h, uint64_t(150) << 20);
            out.write(h.data(), 8);
        }
        fs::resize_file(p, uint64_t(200) << 20);
        std::string msg;
        const double s = seconds_of([&] { msg = error_of([&] { SafetensorsFile f(p); }); });
        EXPECT_ERROR_HAS(msg, "100 MB");
        EXPECT_LT(s, kQuickSeconds);
    }
}

TEST(SafetensorsTest, UnsupportedButValidDtypeFailsOnGet) {
    const std::string p = temp_dir("st-f8") + "/t.safetensors";
    write_bytes(p, make_st(R"({"f8":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", std::string(4, 'x')));
    SafetensorsFile f(p);
    EXPECT_TRUE(f.contains("f8"));
    EXPECT_ERROR_HAS(error_of([&] { f.get("f8"); }), "F8_E4M3");
}

// ============================================================================================== GGUF

// Where things are in a GGUF file (the test's own independent reader).
struct GgufLayout {
    struct Kv {
        uint32_t type;
        uint64_t value_at;
    };
    struct TensorInfo {
        std::string name;
        uint64_t at, dims_at, type_at, offset_at;
        std::vector<uint64_t> ne;
        uint32_t type;
        uint64_t offset;
    };
    std::map<std::string, Kv> kv;
    std::vector<TensorInfo> tensors;
    uint64_t infos_end = 0, data_start = 0;

    const TensorInfo& tensor(const std::string& n) const {
        for (auto& t : tensors)
            if (t.name == n) return t;
        throw std::runtime_error("no tensor " + n);
    }
};

GgufLayout parse_gguf_layout(const std::string& f) {
    GgufLayout L;
    uint64_t p = 24;
    auto u32 = [&] { uint32_t v; std::memcpy(&v, &f[p], 4); p += 4; return v; };
    auto u64 = [&] { uint64_t v; std::memcpy(&v, &f[p], 8); p += 8; return v; };
    auto str = [&] { uint64_t n = u64(); std::string s = f.substr(p, n); p += n; return s; };
    std::function<void(uint32_t)> skip = [&](uint32_t t) {
        static const int sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
        if (t == 8) str();
        else if (t == 9) {
            uint32_t et = u32();
            uint64_t n = u64();
            for (uint64_t i = 0; i < n; ++i) skip(et);
        } else p += sz[t];
    };
    uint64_t nt, nkv;
    std::memcpy(&nt, &f[8], 8);
    std::memcpy(&nkv, &f[16], 8);
    uint64_t align = 32;
    for (uint64_t i = 0; i < nkv; ++i) {
        std::string k = str();
        uint32_t t = u32();
        L.kv[k] = {t, p};
        if (k == "general.alignment") { uint32_t a; std::memcpy(&a, &f[p], 4); align = a; }
        skip(t);
    }
    for (uint64_t i = 0; i < nt; ++i) {
        GgufLayout::TensorInfo ti;
        ti.at = p;
        ti.name = str();
        uint32_t nd = u32();
        ti.dims_at = p;
        for (uint32_t d = 0; d < nd; ++d) ti.ne.push_back(u64());
        ti.type_at = p;
        ti.type = u32();
        ti.offset_at = p;
        ti.offset = u64();
        L.tensors.push_back(ti);
    }
    L.infos_end = p;
    L.data_start = (p + align - 1) / align * align;
    return L;
}

// Writes GGUF files: metadata of any type and tensors given as raw bytes.
class GgufBuilder {
public:
    void kv_raw(const std::string& key, uint32_t type, const std::string& value) {
        put_str(kv_, key);
        put<uint32_t>(kv_, type);
        kv_ += value;
        ++n_kv_;
    }
    void kv_str(const std::string& key, const std::string& v) { kv_raw(key, 8, enc_str(v)); }
    void kv_u32(const std::string& key, uint32_t v) { kv_raw(key, 4, enc<uint32_t>(v)); }
    void kv_f32(const std::string& key, float v) { kv_raw(key, 6, enc<float>(v)); }
    void kv_str_array(const std::string& key, const std::vector<std::string>& v) {
        std::string s;
        put<uint32_t>(s, 8);
        put<uint64_t>(s, v.size());
        for (auto& x : v) s += enc_str(x);
        kv_raw(key, 9, s);
    }
    template <typename T>
    void kv_array(const std::string& key, uint32_t elem_type, const std::vector<T>& v) {
        std::string s;
        put<uint32_t>(s, elem_type);
        put<uint64_t>(s, v.size());
        for (auto& x : v) put<T>(s, x);
        kv_raw(key, 9, s);
    }
    // ne: GGUF order (fastest first).
    void tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, std::string data) {
        tensors_.push_back({name, std::move(ne), type, std::move(data)});
    }
    std::string build(uint32_t version = 3, uint64_t alignment = 32) const {
        std::string s = "GGUF";
        put<uint32_t>(s, version);
        put<uint64_t>(s, tensors_.size());
        put<uint64_t>(s, n_kv_);
        s += kv_;
        std::string data;
        for (const auto& t : tensors_) {
            put_str(s, t.name);
            put<uint32_t>(s, static_cast<uint32_t>(t.ne.size()));
            for (auto n : t.ne) put<uint64_t>(s, n);
            put<uint32_t>(s, t.type);
            while (data.size() % alignment) data.push_back('\0');
            put<uint64_t>(s, data.size());
            data += t.data;
        }
        while (s.size() % alignment) s.push_back('\0');
        return s + data;
    }

    static std::string enc_str(const std::string& v) {
        std::string s;
        put_str(s, v);
        return s;
    }
    template <typename T>
    static std::string enc(T v) {
        std::string s;
        put<T>(s, v);
        return s;
    }

private:
    static void put_str(std::string& s, const std::string& v) {
        put<uint64_t>(s, v.size());
        s += v;
    }
    struct T {
        std::string name;
        std::vector<uint64_t> ne;
        uint32_t type;
        std::string data;
    };
    std::string kv_;
    uint64_t n_kv_ = 0;
    std::vector<T> tensors_;
};

std::string f32_bytes(const at::Tensor& t) {
    at::Tensor c = t.to(at::kFloat).contiguous();
    return std::string(reinterpret_cast<const char*>(c.data_ptr()), c.numel() * 4);
}
std::string u16_bytes(const std::vector<uint16_t>& v) {
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 2);
}

// Hand-decoded half and bfloat16 bit patterns.
const std::vector<std::pair<uint16_t, float>> kHalfCases = {
    {0x3C00, 1.0f},   {0xC000, -2.0f},          {0x3555, 0.333251953125f}, {0x0001, 5.9604644775390625e-8f},
    {0x7BFF, 65504.f}, {0x8000, -0.0f},         {0x3800, 0.5f},            {0x0400, 6.103515625e-05f},
    {0x03FF, 6.097555160522461e-05f},           {0xB400, -0.25f},
};
const std::vector<std::pair<uint16_t, float>> kBf16Cases = {
    {0x3F80, 1.0f}, {0x4049, 3.140625f}, {0xBF00, -0.5f}, {0x0000, 0.0f}, {0x4120, 10.0f}, {0xC2C8, -100.0f},
};

struct TinyGguf {
    std::string bytes;
    std::map<std::string, at::Tensor> expect;  // canonical row-major, before any Q/K permutation
};

struct TinyOptions {
    std::string arch = "llama";
    bool tied = false;
    bool nan = false;
    uint32_t version = 3;
    std::string tokenizer = "llama";
    std::string extra_tensor;       // an F32 (C) tensor of this name beyond what the metadata describes
    uint32_t bos = 1;               // tokenizer.ggml.bos_token_id
    int32_t token_type_3 = 1;       // tokenizer.ggml.token_type of token 3
    float rope_base = 500000.f;     // rope.freq_base
};

// A one-layer model: C=32, H=64, 4 heads (head_dim 8), 2 KV heads, vocab 32, with F16, BF16 and Q8_0 tensors.
TinyGguf make_tiny_gguf(const TinyOptions& o = {}) {
    const int64_t C = 32, H = 64, V = 32, KV = 16;
    GgufBuilder b;
    TinyGguf r;
    const std::string a = o.arch;
    b.kv_str("general.architecture", a);
    b.kv_str("general.name", "tiny");
    b.kv_u32("general.alignment", 32);
    b.kv_u32(a + ".context_length", 128);
    b.kv_u32(a + ".embedding_length", C);
    b.kv_u32(a + ".feed_forward_length", H);
    b.kv_u32(a + ".block_count", 1);
    b.kv_u32(a + ".attention.head_count", 4);
    b.kv_u32(a + ".attention.head_count_kv", 2);
    b.kv_f32(a + ".rope.freq_base", o.rope_base);
    b.kv_f32(a + ".attention.layer_norm_rms_epsilon", 1e-6f);
    // Every metadata value type, which the loader must read past.
    b.kv_raw("x.u8", 0, GgufBuilder::enc<uint8_t>(200));
    b.kv_raw("x.i8", 1, GgufBuilder::enc<int8_t>(-3));
    b.kv_raw("x.u16", 2, GgufBuilder::enc<uint16_t>(60000));
    b.kv_raw("x.i16", 3, GgufBuilder::enc<int16_t>(-300));
    b.kv_raw("x.i32", 5, GgufBuilder::enc<int32_t>(-70000));
    b.kv_raw("x.bool", 7, GgufBuilder::enc<uint8_t>(1));
    b.kv_raw("x.u64", 10, GgufBuilder::enc<uint64_t>(uint64_t(1) << 50));
    b.kv_raw("x.i64", 11, GgufBuilder::enc<int64_t>(-(int64_t(1) << 50)));
    b.kv_raw("x.f64", 12, GgufBuilder::enc<double>(2.5));
    b.kv_array<double>("x.f64s", 12, {1.0, 2.0});
    b.kv_array<uint8_t>("x.bools", 7, {0, 1, 1});
    b.kv_array<int16_t>("x.i16s", 3, {-1, 2});
    {
        std::string nested;  // array of two arrays of uint32
        put<uint32_t>(nested, 9);
        put<uint64_t>(nested, 2);
        for (int k = 0; k < 2; ++k) {
            put<uint32_t>(nested, 4);
            put<uint64_t>(nested, 2);
            put<uint32_t>(nested, k);
            put<uint32_t>(nested, k + 1);
        }
        b.kv_raw("x.nested", 9, nested);
    }
    b.kv_str("x.empty", "");
    // Tokenizer: a small SentencePiece-style vocabulary.
    std::vector<std::string> toks = {"<unk>", "<s>", "</s>"};
    std::vector<float> scores = {0, 0, 0};
    std::vector<int32_t> types = {2, 3, 3};
    for (char ch = 'a'; toks.size() < size_t(V); ++ch) {
        toks.push_back(std::string(toks.size() % 2 ? "\xe2\x96\x81" : "") + ch);
        scores.push_back(-float(toks.size()));
        types.push_back(toks.size() == 4 ? o.token_type_3 : 1);
    }
    b.kv_str("tokenizer.ggml.model", o.tokenizer);
    b.kv_str_array("tokenizer.ggml.tokens", toks);
    b.kv_array<float>("tokenizer.ggml.scores", 6, scores);
    b.kv_array<int32_t>("tokenizer.ggml.token_type", 5, types);
    b.kv_u32("tokenizer.ggml.bos_token_id", o.bos);
    b.kv_u32("tokenizer.ggml.eos_token_id", 2);
    b.kv_u32("tokenizer.ggml.unknown_token_id", 0);
    b.kv_u32("tokenizer.ggml.padding_token_id", 0xFFFFFFFFu);

    at::manual_seed(7);
    auto add_f32 = [&](const std::string& name, std::vector<int64_t> shape) {
        at::Tensor t = at::randn(shape);
        std::vector<uint64_t> ne(shape.rbegin(), shape.rend());
        b.tensor(name, ne, 0, f32_bytes(t));
        r.expect[name] = t;
    };
    // Q8_0: per 32-value block an fp16 scale then 32 int8. Row r of a (rows, cols) matrix, block k, value j:
    // q = (j - 16 + r + k) clamped, scale from a small table.
    auto add_q8 = [&](const std::string& name, int64_t rows, int64_t cols) {
        std::string data;
        at::Tensor t = at::empty({rows, cols});
        const uint16_t scale_bits[] = {0x3800, 0xBC00, 0x3400, 0x2E66};
        const float scale_val[] = {0.5f, -1.0f, 0.25f, 0.0999755859375f};
        for (int64_t row = 0; row < rows; ++row)
            for (int64_t k = 0; k < cols / 32; ++k) {
                const int s = int((row + k) % 4);
                put<uint16_t>(data, scale_bits[s]);
                for (int j = 0; j < 32; ++j) {
                    const int q = std::max(-128, std::min(127, j - 16 + int(row) + int(k)));
                    put<int8_t>(data, int8_t(q));
                    t[row][k * 32 + j] = scale_val[s] * float(q);
                }
            }
        b.tensor(name, {uint64_t(cols), uint64_t(rows)}, 8, data);
        r.expect[name] = t;
    };
    auto add_16 = [&](const std::string& name, int64_t rows, int64_t cols, uint32_t type,
                      const std::vector<std::pair<uint16_t, float>>& cases) {
        std::vector<uint16_t> bits;
        at::Tensor t = at::empty({rows, cols});
        for (int64_t i = 0; i < rows * cols; ++i) {
            const auto& c = cases[size_t(i * 7 % int64_t(cases.size()))];
            bits.push_back(c.first);
            t[i / cols][i % cols] = c.second;
        }
        b.tensor(name, {uint64_t(cols), uint64_t(rows)}, type, u16_bytes(bits));
        r.expect[name] = t;
    };
    add_q8("token_embd.weight", V, C);
    add_f32("output_norm.weight", {C});
    if (!o.tied) add_16("output.weight", V, C, 1, kHalfCases);
    add_16("blk.0.attn_q.weight", C, C, 30, kBf16Cases);
    add_16("blk.0.attn_k.weight", KV, C, 1, kHalfCases);
    add_q8("blk.0.attn_v.weight", KV, C);
    add_f32("blk.0.attn_output.weight", {C, C});
    if (o.arch == "qwen2") {
        add_f32("blk.0.attn_q.bias", {C});
        add_f32("blk.0.attn_k.bias", {KV});
        add_f32("blk.0.attn_v.bias", {KV});
    }
    add_f32("blk.0.attn_norm.weight", {C});
    if (o.nan) {
        at::Tensor t = at::randn({H, C});
        t[3][5] = NAN;
        b.tensor("blk.0.ffn_gate.weight", {uint64_t(C), uint64_t(H)}, 0, f32_bytes(t));
        r.expect["blk.0.ffn_gate.weight"] = t;
    } else {
        add_f32("blk.0.ffn_gate.weight", {H, C});
    }
    add_q8("blk.0.ffn_down.weight", C, H);
    add_f32("blk.0.ffn_up.weight", {H, C});
    add_f32("blk.0.ffn_norm.weight", {C});
    if (!o.extra_tensor.empty()) add_f32(o.extra_tensor, {C});
    r.bytes = b.build(o.version);
    return r;
}

std::string write_temp(const std::string& tag, const std::string& name, const std::string& bytes) {
    const std::string p = temp_dir(tag) + "/" + name;
    write_bytes(p, bytes);
    return p;
}

TEST(GgufTest, LoadsStories260K) {
    auto m = load_gguf(test::stories_gguf(), {});
    const auto& c = m->config;
    EXPECT_EQ(m->format, "gguf");
    EXPECT_EQ(m->source, test::stories_gguf());
    EXPECT_EQ(c.arch, Arch::Llama);
    EXPECT_EQ(c.dim, 64);
    EXPECT_EQ(c.hidden_dim, 172);
    EXPECT_EQ(c.n_layers, 5);
    EXPECT_EQ(c.n_heads, 8);
    EXPECT_EQ(c.n_kv_heads, 4);
    EXPECT_EQ(c.vocab_size, 512);
    EXPECT_EQ(c.head_dim, 8);
    EXPECT_EQ(c.max_seq_len, 2048);
    EXPECT_NEAR(c.norm_eps, 1e-5, 1e-9);
    EXPECT_EQ(c.rope_theta, 10000.0);
    EXPECT_FALSE(c.tied_embeddings);
    EXPECT_TRUE(m->warnings.empty());
    EXPECT_EQ(m->weights.tok_emb.sizes(), (std::vector<int64_t>{512, 64}));
    EXPECT_EQ(m->weights.layers[0].wk.sizes(), (std::vector<int64_t>{32, 64}));
    EXPECT_EQ(m->weights.layers[0].w_down.sizes(), (std::vector<int64_t>{64, 172}));
    EXPECT_EQ(m->weights.tok_emb.scalar_type(), at::kFloat);
    EXPECT_TRUE(m->weights.tok_emb.is_contiguous());
    ASSERT_TRUE(m->tokenizer);
    EXPECT_EQ(m->tokenizer->vocab_size(), 512);
    EXPECT_EQ(m->tokenizer->bos_id(), 1);
    EXPECT_EQ(m->tokenizer->eos_id(), 2);

    // Q is stored interleaved in the file: the loader's rows, permuted back, are the file's bytes.
    const std::string raw = read_bytes(test::stories_gguf());
    const GgufLayout L = parse_gguf_layout(raw);
    for (const char* n : {"blk.0.attn_q.weight", "blk.4.attn_k.weight", "blk.2.ffn_down.weight"}) {
        const auto& ti = L.tensor(n);
        at::Tensor file = at::empty({int64_t(ti.ne[1]), int64_t(ti.ne[0])});
        std::memcpy(file.data_ptr(), raw.data() + L.data_start + ti.offset, file.numel() * 4);
        at::Tensor loaded = std::string(n) == "blk.0.attn_q.weight"   ? half_to_interleaved(m->weights.layers[0].wq, 8)
                            : std::string(n) == "blk.4.attn_k.weight" ? half_to_interleaved(m->weights.layers[4].wk, 4)
                                                                      : m->weights.layers[2].w_down;
        EXPECT_TRUE(at::equal(file, loaded)) << n;
    }
}

TEST(GgufTest, MatchesLlama2cCheckpoint) {
    // The GGUF was converted from stories260K.bin: both loaders must give the same canonical weights.
    auto g = load_gguf(test::stories_gguf(), {});
    auto b = load_llama2c(test::stories_bin(), {});
    for (size_t l = 0; l < g->weights.layers.size(); ++l) {
        EXPECT_TRUE(at::allclose(g->weights.layers[l].wq, b->weights.layers[l].wq)) << l;
        EXPECT_TRUE(at::allclose(g->weights.layers[l].wk, b->weights.layers[l].wk)) << l;
        EXPECT_TRUE(at::allclose(g->weights.layers[l].w_gate, b->weights.layers[l].w_gate)) << l;
    }
    EXPECT_TRUE(at::allclose(g->weights.tok_emb, b->weights.tok_emb));
}

TEST(GgufTest, ProgressCanCancel) {
    int calls = 0;
    LoadOptions o;
    o.progress = [&](double f, const std::string&) {
        EXPECT_GE(f, 0.0);
        EXPECT_LE(f, 1.0);
        return ++calls < 5;
    };
    EXPECT_THROW(load_gguf(test::stories_gguf(), o), Cancelled);
    EXPECT_EQ(calls, 5);
}

TEST(GgufTest, TinyModelDequantizesF16Bf16Q80) {
    for (uint32_t version : {2u, 3u}) {
        TinyOptions o;
        o.version = version;
        TinyGguf t = make_tiny_gguf(o);
        const std::string p = write_temp("gguf-tiny", "tiny.gguf", t.bytes);
        auto m = load_gguf(p, {});
        const auto& c = m->config;
        EXPECT_EQ(c.dim, 32);
        EXPECT_EQ(c.hidden_dim, 64);
        EXPECT_EQ(c.n_layers, 1);
        EXPECT_EQ(c.n_heads, 4);
        EXPECT_EQ(c.n_kv_heads, 2);
        EXPECT_EQ(c.vocab_size, 32);
        EXPECT_EQ(c.max_seq_len, 128);
        EXPECT_EQ(c.rope_theta, 500000.0);
        EXPECT_NEAR(c.norm_eps, 1e-6, 1e-12);
        EXPECT_FALSE(c.qkv_bias);
        const auto& w = m->weights;
        const auto& L = w.layers[0];
        // Hand-checked values first.
        EXPECT_EQ(w.tok_emb[0][0].item<float>(), 0.5f * -16);  // row 0: scale 0.5, q = -16
        EXPECT_EQ(w.tok_emb[1][31].item<float>(), -1.0f * 16);  // row 1: scale -1, q = 31 - 16 + 1
        EXPECT_EQ(w.tok_emb[3][0].item<float>(), 0.0999755859375f * -13);
        EXPECT_EQ(w.lm_head[0][0].item<float>(), 1.0f);           // case 0
        EXPECT_EQ(w.lm_head[0][1].item<float>(), 6.103515625e-05f); // case 7 = 0x0400, smallest normal
        EXPECT_EQ(w.lm_head[0][3].item<float>(), -2.0f);          // case 21 % 10 = 1 = 0xC000
        EXPECT_TRUE(at::equal(w.tok_emb, t.expect["token_embd.weight"]));
        EXPECT_TRUE(at::equal(w.lm_head, t.expect["output.weight"]));
        EXPECT_TRUE(at::equal(half_to_interleaved(L.wq, 4), t.expect["blk.0.attn_q.weight"]));
        EXPECT_TRUE(at::equal(L.wq, interleaved_to_half(t.expect["blk.0.attn_q.weight"], 4)));
        EXPECT_TRUE(at::equal(L.wk, interleaved_to_half(t.expect["blk.0.attn_k.weight"], 2)));
        EXPECT_TRUE(at::equal(L.wv, t.expect["blk.0.attn_v.weight"]));
        EXPECT_TRUE(at::equal(L.wo, t.expect["blk.0.attn_output.weight"]));
        EXPECT_TRUE(at::equal(L.w_down, t.expect["blk.0.ffn_down.weight"]));
        EXPECT_TRUE(at::equal(L.w_gate, t.expect["blk.0.ffn_gate.weight"]));
        EXPECT_TRUE(at::equal(L.w_up, t.expect["blk.0.ffn_up.weight"]));
        EXPECT_TRUE(at::equal(w.final_norm, t.expect["output_norm.weight"]));
        ASSERT_TRUE(m->tokenizer);
        EXPECT_EQ(m->tokenizer->vocab_size(), 32);
        EXPECT_EQ(m->tokenizer->bos_id(), 1);
        EXPECT_TRUE(m->warnings.empty());
    }
}

// The metadata must describe the file: tensors beyond block_count or unknown ones, special ids outside the
// vocabulary, token types that do not exist and a non-finite RoPE base are refused, naming the key or tensor (they
// were accepted: block_count 4 with blk.4.* present ran 4 of 5 layers).
TEST(GgufTest, MetadataThatDisagreesWithTheTensorsIsRefused) {
    auto error_for = [](const TinyOptions& o) {
        const std::string p = write_temp("gguf-meta", "tiny.gguf", make_tiny_gguf(o).bytes);
        return error_of([&] { load_gguf(p, {}); });
    };
    TinyOptions o;
    EXPECT_EQ(error_for(o), "<no error>");
    o.extra_tensor = "blk.1.attn_norm.weight";
    EXPECT_ERROR_HAS(error_for(o), "tensor blk.1.attn_norm.weight is not part of the llama model");
    EXPECT_ERROR_HAS(error_for(o), "block_count = 1");
    o.extra_tensor = "mystery.weight";
    EXPECT_ERROR_HAS(error_for(o), "tensor mystery.weight is not part of");
    o = {};
    o.bos = 99;
    EXPECT_ERROR_HAS(error_for(o), "tokenizer.ggml.bos_token_id = 99 is outside the vocabulary");
    o = {};
    o.bos = 0xFFFFFFFFu;  // "none"
    EXPECT_EQ(error_for(o), "<no error>");
    for (int32_t bad : {7, -1, 99}) {
        o = {};
        o.token_type_3 = bad;
        EXPECT_ERROR_HAS(error_for(o), "tokenizer.ggml.token_type[3]");
    }
    o = {};
    o.rope_base = INFINITY;
    EXPECT_ERROR_HAS(error_for(o), "rope_theta inf must be positive and finite");
}

TEST(GgufTest, HalfAndBf16BitPatterns) {
    TinyGguf t = make_tiny_gguf();
    auto m = load_gguf(write_temp("gguf-bits", "tiny.gguf", t.bytes), {});
    // output.weight element i holds kHalfCases[i*7 % 10]; attn_q element i holds kBf16Cases[i*7 % 6] (before
    // the Q permutation, which moves rows only).
    at::Tensor out = m->weights.lm_head.flatten();
    for (int64_t i = 0; i < 40; ++i) {
        const float want = kHalfCases[size_t(i * 7 % 10)].second;
        const float got = out[i].item<float>();
        EXPECT_EQ(got, want) << i;
        EXPECT_EQ(std::signbit(got), std::signbit(want)) << i;
    }
    at::Tensor q = half_to_interleaved(m->weights.layers[0].wq, 4).flatten();
    for (int64_t i = 0; i < 40; ++i) EXPECT_EQ(q[i].item<float>(), kBf16Cases[size_t(i * 7 % 6)].second) << i;
}

TEST(GgufTest, Qwen2KeepsRotateHalfOrderAndBiases) {
    TinyOptions o;
    o.arch = "qwen2";
    TinyGguf t = make_tiny_gguf(o);
    auto m = load_gguf(write_temp("gguf-qwen", "q.gguf", t.bytes), {});
    EXPECT_EQ(m->config.arch_name, "qwen2");
    EXPECT_TRUE(m->config.qkv_bias);
    const auto& L = m->weights.layers[0];
    // llama.cpp runs qwen2 with NEOX (rotate-half) RoPE, so its Q/K rows are stored unpermuted.
    EXPECT_TRUE(at::equal(L.wq, t.expect["blk.0.attn_q.weight"]));
    EXPECT_TRUE(at::equal(L.wk, t.expect["blk.0.attn_k.weight"]));
    EXPECT_TRUE(at::equal(L.bq, t.expect["blk.0.attn_q.bias"]));
    EXPECT_TRUE(at::equal(L.bk, t.expect["blk.0.attn_k.bias"]));
    EXPECT_TRUE(at::equal(L.bv, t.expect["blk.0.attn_v.bias"]));
}

TEST(GgufTest, MistralIsLlamaAndTokenizerChoices) {
    TinyOptions o;
    o.arch = "mistral";
    TinyGguf t = make_tiny_gguf(o);
    auto m = load_gguf(write_temp("gguf-mistral", "m.gguf", t.bytes), {});
    EXPECT_EQ(m->config.arch, Arch::Llama);
    EXPECT_EQ(m->config.arch_name, "mistral");
    EXPECT_TRUE(at::equal(m->weights.layers[0].wq, interleaved_to_half(t.expect["blk.0.attn_q.weight"], 4)));

    o.arch = "llama";
    o.tokenizer = "bert";
    const std::string p = write_temp("gguf-tok", "t.gguf", make_tiny_gguf(o).bytes);
    const std::string msg = error_of([&] { load_gguf(p, {}); });
    EXPECT_ERROR_HAS(msg, "unsupported tokenizer model 'bert'");
    EXPECT_ERROR_HAS(msg, p);
    // An explicit tokenizer file overrides the metadata.
    LoadOptions lo;
    lo.tokenizer_path = test::stories_tok_bin();
    auto m2 = load_gguf(p, lo);
    ASSERT_TRUE(m2->tokenizer);
}

TEST(GgufTest, TiedEmbeddingsAndNanWarning) {
    TinyOptions o;
    o.tied = true;
    o.nan = true;
    auto m = load_gguf(write_temp("gguf-tied", "t.gguf", make_tiny_gguf(o).bytes), {});
    EXPECT_TRUE(m->config.tied_embeddings);
    EXPECT_TRUE(at::equal(m->weights.lm_head, m->weights.tok_emb));
    ASSERT_EQ(m->warnings.size(), 1u);
    EXPECT_ERROR_HAS(m->warnings[0], "model.layers.0.mlp.gate_proj.weight");
    EXPECT_ERROR_HAS(m->warnings[0], "NaN");
    // Named as the file names it, with our layer (and kept for errors about results that are not finite).
    EXPECT_ERROR_HAS(m->warnings[0], "tensor blk.0.ffn_gate.weight (layer 0, model.layers.0.mlp.gate_proj.weight; ");
    ASSERT_EQ(m->non_finite_weights.size(), 1u);
    EXPECT_ERROR_HAS(m->warnings[0], m->non_finite_weights[0]);
}

class GgufBroken : public ::testing::Test {
protected:
    void SetUp() override {
        raw_ = read_bytes(test::stories_gguf());
        layout_ = parse_gguf_layout(raw_);
        dir_ = temp_dir("gguf-broken");
    }
    // Loads the bytes, expects a cushion::Error containing `needle` and the path, quickly.
    void expect_error(const std::string& name, const std::string& bytes, const std::string& needle) {
        const std::string p = dir_ + "/" + name + ".gguf";
        write_bytes(p, bytes);
        std::string msg;
        const double s = seconds_of([&] { msg = error_of([&] { load_gguf(p, {}); }); });
        EXPECT_ERROR_HAS(msg, needle) << " case " << name;
        EXPECT_ERROR_HAS(msg, p) << " case " << name;
        EXPECT_LT(s, kQuickSeconds) << " case " << name;
    }
    std::string raw_, dir_;
    GgufLayout layout_;
};

TEST_F(GgufBroken, Truncated) {
    const auto& q = layout_.tensor("blk.0.attn_q.weight");
    const std::vector<uint64_t> cuts = {0, 3, 6, 12, 20, 30, 200, 5000, layout_.tensors[0].at + 3,
                                        q.dims_at + 4, q.offset_at + 2, layout_.infos_end - 1,
                                        layout_.data_start + 1000, raw_.size() / 2, raw_.size() - 1};
    for (uint64_t cut : cuts) {
        const std::string msg = error_of([&] {
            const std::string p = dir_ + "/cut" + std::to_string(cut) + ".gguf";
            write_bytes(p, raw_.substr(0, cut));
            load_gguf(p, {});
        });
        EXPECT_ERROR_HAS(msg, "cut" + std::to_string(cut) + ".gguf") << " cut at " << cut;
        EXPECT_TRUE(msg.find("past the end") != std::string::npos || msg.find("absurd") != std::string::npos ||
                    msg.find("not a GGUF") != std::string::npos || msg.find("truncated") != std::string::npos)
            << "cut at " << cut << ": " << msg;
    }
}

TEST_F(GgufBroken, WrongMagicAndVersions) {
    std::string b = raw_;
    b[0] = 'X';
    expect_error("magic", b, "not a GGUF file");
    b = raw_;
    poke<uint32_t>(b, 4, 1);
    expect_error("v1", b, "unsupported GGUF version 1");
    poke<uint32_t>(b, 4, 99);
    expect_error("v99", b, "unsupported GGUF version 99");
}

TEST_F(GgufBroken, AbsurdCountsAndDimensions) {
    std::string b = raw_;
    poke<uint64_t>(b, 8, uint64_t(1) << 60);
    expect_error("n-tensors", b, "tensor count");
    b = raw_;
    poke<uint64_t>(b, 8, 900000);  // below the hard cap but far more than fit in the file
    expect_error("n-tensors-2", b, "tensor count");
    b = raw_;
    poke<uint64_t>(b, 16, uint64_t(1) << 40);
    expect_error("n-kv", b, "metadata key count");
    b = raw_;
    const auto& q = layout_.tensor("blk.0.attn_q.weight");
    poke<uint64_t>(b, q.dims_at, uint64_t(1) << 40);
    expect_error("dim-2^40", b, "blk.0.attn_q.weight");
    poke<uint64_t>(b, q.dims_at, 0);
    expect_error("dim-0", b, "blk.0.attn_q.weight");
    // Dimensions each below 2^31 whose product needs more bytes than the file has.
    b = raw_;
    poke<uint64_t>(b, q.dims_at, 1u << 30);
    poke<uint64_t>(b, q.dims_at + 8, 1u << 30);
    expect_error("dims-product", b, "blk.0.attn_q.weight");
    // n_dims = 7
    b = raw_;
    poke<uint32_t>(b, q.dims_at - 4, 7);
    expect_error("n-dims", b, "dimensions");
    // An array claiming 2^50 strings.
    b = raw_;
    poke<uint64_t>(b, layout_.kv.at("tokenizer.ggml.tokens").value_at + 4, uint64_t(1) << 50);
    expect_error("array-len", b, "tokenizer.ggml.tokens");
    // A string claiming 2^60 bytes.
    b = raw_;
    poke<uint64_t>(b, layout_.kv.at("general.name").value_at, uint64_t(1) << 60);
    expect_error("string-len", b, "metadata string");
    // An unknown value type.
    b = raw_;
    poke<uint32_t>(b, layout_.kv.at("general.name").value_at - 4, 77);
    expect_error("value-type", b, "unknown value type 77");
}

TEST_F(GgufBroken, BadOffsets) {
    std::string b = raw_;
    const auto& last = layout_.tensors.back();
    poke<uint64_t>(b, last.offset_at, last.offset + 1024 * 1024);
    expect_error("offset-past-end", b, last.name);
    b = raw_;
    poke<uint64_t>(b, last.offset_at, UINT64_MAX - 31);
    expect_error("offset-wrap", b, "past the end");
    b = raw_;
    poke<uint64_t>(b, last.offset_at, last.offset + 4);
    expect_error("offset-misaligned", b, "alignment");
}

TEST_F(GgufBroken, UnsupportedTensorTypeAndArchitecture) {
    std::string b = raw_;
    const auto& q = layout_.tensor("blk.0.attn_q.weight");
    poke<uint32_t>(b, q.type_at, 16);
    expect_error("iq2xxs", b, "unsupported tensor type IQ2_XXS for tensor blk.0.attn_q.weight");
    // Q4_K is read, but its 256-value blocks cannot tile rows of 64.
    poke<uint32_t>(b, q.type_at, 12);
    expect_error("q4k", b, "'blk.0.attn_q.weight' of type Q4_K has a row of 64 elements, not a multiple of the block size 256");
    poke<uint32_t>(b, q.type_at, 1234);
    expect_error("type-1234", b, "unsupported tensor type");

    b = raw_;
    const uint64_t at = layout_.kv.at("general.architecture").value_at;
    ASSERT_EQ(b.substr(at + 8, 5), "llama");
    b.replace(at + 8, 5, "mamba");
    expect_error("arch", b, "unsupported architecture 'mamba'");
    // Same file, but the type of general.architecture is an integer.
    b = raw_;
    poke<uint32_t>(b, at - 4, 4);  // uint32 instead of string: the rest of the file then misparses
    EXPECT_NE(error_of([&] {
                  write_bytes(dir_ + "/arch-type.gguf", b);
                  load_gguf(dir_ + "/arch-type.gguf", {});
              }),
              "<no error>");
}

TEST_F(GgufBroken, MissingPieces) {
    // Rename token_embd.weight -> token_embX.weight: the model lacks its embedding.
    std::string b = raw_;
    const auto& e = layout_.tensor("token_embd.weight");
    b[e.at + 8 + std::strlen("token_emb")] = 'X';
    expect_error("no-embedding", b, "token_embd.weight");
    // Remove block_count by renaming its key.
    b = raw_;
    for (const auto& kv : layout_.kv)
        if (kv.first == "llama.block_count") {
            const uint64_t key_at = kv.second.value_at - 4 - kv.first.size();
            b[key_at] = 'X';
        }
    expect_error("no-block-count", b, "llama.block_count");
}

TEST(GgufTest, RandomCorruptionNeverCrashes) {
    // Flip bytes in the header region: every outcome is a model or a cushion::Error, never a crash.
    const std::string raw = read_bytes(test::stories_gguf());
    const GgufLayout L = parse_gguf_layout(raw);
    const std::string dir = temp_dir("gguf-fuzz");
    uint64_t state = 12345;
    auto next = [&] { state = state * 6364136223846793005ull + 1442695040888963407ull; return state >> 33; };
    for (int i = 0; i < 60; ++i) {
        std::string b = raw;
        for (int k = 0; k < 3; ++k) b[next() % L.infos_end] = char(next());
        const std::string p = dir + "/f.gguf";
        write_bytes(p, b);
        try {
            load_gguf(p, {});
        } catch (const Error&) {
        }
    }
}

// ============================================================================================== Hugging Face

// A random model with the stories260K SentencePiece tokenizer placed beside its (fictitious) source file.
std::shared_ptr<Model> make_tiny_model(Arch arch, bool qkv_bias, bool tied, const std::string& dir) {
    auto m = std::make_shared<Model>();
    ModelConfig& c = m->config;
    c.arch = arch;
    c.arch_name = arch == Arch::OPT ? "opt" : (qkv_bias ? "qwen2" : "llama");
    c.dim = 16;
    c.hidden_dim = 40;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = arch == Arch::OPT ? 4 : 2;
    c.head_dim = 4;
    c.vocab_size = 512;
    c.max_seq_len = 64;
    c.rope_theta = 10000.0;
    c.norm_eps = arch == Arch::OPT ? 1e-5 : 1e-6;
    c.tied_embeddings = tied;
    c.qkv_bias = qkv_bias;
    const int64_t C = c.dim, H = c.hidden_dim, KV = c.kv_dim(), V = c.vocab_size;
    auto r = [](std::vector<int64_t> s) { return at::randn(s); };
    auto& w = m->weights;
    w.tok_emb = r({V, C});
    w.final_norm = r({C});
    w.lm_head = tied ? w.tok_emb : r({V, C});
    if (arch == Arch::OPT) {
        w.pos_emb = r({c.max_seq_len + 2, C});
        w.final_norm_bias = r({C});
    }
    for (int l = 0; l < c.n_layers; ++l) {
        LayerWeights L;
        L.attn_norm = r({C});
        L.wq = r({C, C});
        L.wk = r({KV, C});
        L.wv = r({KV, C});
        L.wo = r({C, C});
        L.ffn_norm = r({C});
        L.w_up = r({H, C});
        L.w_down = r({C, H});
        if (arch == Arch::OPT) {
            L.attn_norm_bias = r({C});
            L.ffn_norm_bias = r({C});
            L.bq = r({C});
            L.bk = r({KV});
            L.bv = r({KV});
            L.bo = r({C});
            L.b_up = r({H});
            L.b_down = r({C});
        } else {
            L.w_gate = r({H, C});
            if (qkv_bias) {
                L.bq = r({C});
                L.bk = r({KV});
                L.bv = r({KV});
            }
        }
        w.layers.push_back(L);
    }
    fs::copy_file(test::stories_tok_model(), fs::path(dir) / "tok512.model");
    m->source = dir + "/weights.bin";
    m->tokenizer = load_sentencepiece_tokenizer(test::stories_tok_model());
    m->format = "llama2c";
    return m;
}

void expect_same_config(const ModelConfig& a, const ModelConfig& b) {
    EXPECT_EQ(a.arch, b.arch);
    EXPECT_EQ(a.dim, b.dim);
    EXPECT_EQ(a.hidden_dim, b.hidden_dim);
    EXPECT_EQ(a.n_layers, b.n_layers);
    EXPECT_EQ(a.n_heads, b.n_heads);
    EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
    EXPECT_EQ(a.vocab_size, b.vocab_size);
    EXPECT_EQ(a.max_seq_len, b.max_seq_len);
    EXPECT_EQ(a.head_dim, b.head_dim);
    EXPECT_EQ(a.rope_theta, b.rope_theta);
    EXPECT_EQ(a.norm_eps, b.norm_eps);
    EXPECT_EQ(a.tied_embeddings, b.tied_embeddings);
    EXPECT_EQ(a.qkv_bias, b.qkv_bias);
    EXPECT_EQ(a.do_layer_norm_before, b.do_layer_norm_before);
}

struct HfCase {
    Arch arch;
    bool qkv_bias, tied;
    const char* model_type;
};

TEST(HfTest, RoundTripLlamaQwen2Opt) {
    for (const HfCase& k : {HfCase{Arch::Llama, false, false, "llama"}, HfCase{Arch::Llama, false, true, "llama"},
                            HfCase{Arch::Llama, true, false, "qwen2"}, HfCase{Arch::OPT, false, true, "opt"},
                            HfCase{Arch::OPT, false, false, "opt"}}) {
        SCOPED_TRACE(std::string(k.model_type) + (k.tied ? " tied" : ""));
        const std::string src = temp_dir("hf-src");
        auto m = make_tiny_model(k.arch, k.qkv_bias, k.tied, src);
        const std::string out = temp_dir("hf-out") + "/model";
        save_hf_directory(*m, out);
        EXPECT_TRUE(fs::exists(out + "/config.json"));
        EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
        EXPECT_TRUE(fs::exists(out + "/tokenizer.model"));
        const auto cfg = nlohmann::json::parse(read_text_file(out + "/config.json"));
        EXPECT_EQ(cfg["model_type"], k.model_type);
        EXPECT_EQ(cfg["torch_dtype"], "float32");
        EXPECT_EQ(cfg["bos_token_id"], 1);
        EXPECT_EQ(cfg["eos_token_id"], 2);

        auto back = load_hf_directory(out, {});
        EXPECT_EQ(back->format, "hf");
        expect_same_config(m->config, back->config);
        expect_same_weights(*m, *back);
        if (k.tied) {
            EXPECT_TRUE(at::equal(back->weights.lm_head, back->weights.tok_emb));
        }
        EXPECT_TRUE(back->warnings.empty());
        ASSERT_TRUE(back->tokenizer);
        EXPECT_EQ(back->tokenizer->vocab_size(), 512);
        // Nothing but the target in the parent directory (no temporaries left behind).
        int n = 0;
        for (auto& e : fs::directory_iterator(fs::path(out).parent_path())) n += e.exists();
        EXPECT_EQ(n, 1);
    }
}

TEST(HfTest, SaveReplacesExistingDirectoryAtomically) {
    const std::string src = temp_dir("hf-replace-src");
    auto a = make_tiny_model(Arch::Llama, false, false, src);
    const std::string out = temp_dir("hf-replace") + "/m";
    save_hf_directory(*a, out);
    write_text_atomically(out + "/stale.txt", "old");
    a->weights.tok_emb = a->weights.tok_emb * 2;
    save_hf_directory(*a, out + "/");
    EXPECT_FALSE(fs::exists(out + "/stale.txt"));
    auto back = load_hf_directory(out, {});
    EXPECT_TRUE(at::equal(back->weights.tok_emb, a->weights.tok_emb));
    int n = 0;
    for (auto& e : fs::directory_iterator(fs::path(out).parent_path())) n += e.exists();
    EXPECT_EQ(n, 1);
}

TEST(HfTest, GgufToHfRoundTrip) {
    // stories260K.gguf -> HF directory (tok512.model copied as tokenizer.model) -> same weights.
    const std::string dir = temp_dir("hf-gguf");
    fs::copy_file(test::stories_gguf(), dir + "/stories260K.gguf");
    fs::copy_file(test::stories_tok_model(), dir + "/tok512.model");
    auto g = load_gguf(dir + "/stories260K.gguf", {});
    save_hf_directory(*g, dir + "/hf");
    EXPECT_EQ(read_bytes(dir + "/hf/tokenizer.model"), read_bytes(test::stories_tok_model()));
    auto h = load_hf_directory(dir + "/hf", {});
    expect_same_config(g->config, h->config);
    expect_same_weights(*g, *h);
    EXPECT_EQ(h->tokenizer->encode("Once upon a time", true), g->tokenizer->encode("Once upon a time", true));
}

// Saves a tiny model and returns its directory.
std::string saved_tiny(Arch arch, const std::string& tag, std::shared_ptr<Model>* model = nullptr, bool qkv = false) {
    const std::string src = temp_dir(tag + "-src");
    auto m = make_tiny_model(arch, qkv, false, src);
    const std::string out = temp_dir(tag) + "/m";
    save_hf_directory(*m, out);
    if (model) *model = m;
    return out;
}

void edit_config(const std::string& dir, const std::function<void(nlohmann::json&)>& f) {
    auto j = nlohmann::json::parse(read_text_file(dir + "/config.json"));
    f(j);
    write_text_atomically(dir + "/config.json", j.dump(2));
}

TEST(HfTest, ShardedIndexAndNamesWithoutPrefix) {
    std::shared_ptr<Model> m;
    const std::string dir = saved_tiny(Arch::Llama, "hf-shard", &m);
    SafetensorsFile all(dir + "/model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> a, b;
    nlohmann::json index;
    index["metadata"] = {{"total_size", 0}};
    int i = 0;
    for (const auto& n : all.names()) {
        const bool first = i++ % 2 == 0;
        // Shard 2 stores names without the leading "model." (accepted either way).
        std::string stored = !first && n.rfind("model.", 0) == 0 ? n.substr(6) : n;
        (first ? a : b).emplace_back(stored, all.get(n));
        index["weight_map"][stored] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    }
    save_safetensors(dir + "/model-00001-of-00002.safetensors", a);
    save_safetensors(dir + "/model-00002-of-00002.safetensors", b);
    write_text_atomically(dir + "/model.safetensors.index.json", index.dump());
    fs::remove(dir + "/model.safetensors");
    auto back = load_hf_directory(dir, {});
    expect_same_weights(*m, *back);

    // An index naming a tensor its shard lacks is an error naming both.
    index["weight_map"]["model.layers.9.bogus"] = "model-00001-of-00002.safetensors";
    write_text_atomically(dir + "/model.safetensors.index.json", index.dump());
    const std::string msg = error_of([&] { load_hf_directory(dir, {}); });
    EXPECT_ERROR_HAS(msg, "model.layers.9.bogus");
    EXPECT_ERROR_HAS(msg, "model-00001-of-00002.safetensors");
    // A shard path escaping the directory is refused.
    index["weight_map"].erase("model.layers.9.bogus");
    index["weight_map"]["lm_head.weight"] = "../evil.safetensors";
    write_text_atomically(dir + "/model.safetensors.index.json", index.dump());
    EXPECT_ERROR_HAS(error_of([&] { load_hf_directory(dir, {}); }), "../evil.safetensors");
}

TEST(HfTest, ConfigErrorsNameFieldAndFile) {
    const std::string dir = saved_tiny(Arch::Llama, "hf-cfg");
    const std::string cfg = dir + "/config.json";
    const std::string orig = read_text_file(cfg);

    edit_config(dir, [](nlohmann::json& j) { j.erase("hidden_size"); });
    std::string msg = error_of([&] { load_hf_directory(dir, {}); });
    EXPECT_ERROR_HAS(msg, "'hidden_size'");
    EXPECT_ERROR_HAS(msg, cfg);

    write_text_atomically(cfg, orig);
    edit_config(dir, [](nlohmann::json& j) { j["num_hidden_layers"] = "two"; });
    EXPECT_ERROR_HAS(error_of([&] { load_hf_directory(dir, {}); }), "'num_hidden_layers'");

    write_text_atomically(cfg, orig);
    edit_config(dir, [](nlohmann::json& j) {
        j["model_type"] = "gpt_neox";
        j["architectures"] = {"GPTNeoXForCausalLM"};
    });
    msg = error_of([&] { load_hf_directory(dir, {}); });
    EXPECT_ERROR_HAS(msg, "unsupported architecture 'gpt_neox'");
    EXPECT_ERROR_HAS(msg, cfg);

    // No model_type: architectures decides.
    write_text_atomically(cfg, orig);
    edit_config(dir, [](nlohmann::json& j) { j.erase("model_type"); });
    EXPECT_NO_THROW(load_hf_directory(dir, {}));

    write_text_atomically(cfg, "{ not json");
    EXPECT_ERROR_HAS(error_of([&] { load_hf_directory(dir, {}); }), "invalid JSON");

    write_text_atomically(cfg, orig);
    edit_config(dir, [](nlohmann::json& j) { j["hidden_size"] = int64_t(1) << 40; });
    EXPECT_ERROR_HAS(error_of([&] { load_hf_directory(dir, {}); }), "hidden_size");

    write_text_atomically(cfg, orig);
    edit_config(dir, [](nlohmann::json& j) { j["num_attention_heads"] = 0; });
    EXPECT_NE(error_of([&] { load_hf_directory(dir, {}); }), "<no error>");

    fs::remove(cfg);
    EXPECT_ERROR_HAS(error_of([&] { load_hf_directory(dir, {}); }), "config.json");
}

TEST(HfTest, OptSpecificErrors) {
    const std::string dir = saved_tiny(Arch::OPT, "hf-opt");
    edit_config(dir, [](nlohmann::json& j) { j["word_embed_proj_dim"] = 8; });
    EXPECT_ERROR_HAS(error_of([&] { load_hf_directory(dir, {}); }), "word_embed_proj_dim");
    edit_config(dir, [](nlohmann::json& j) {
        j["word_embed_proj_dim"] = 16;
        j["activation_function"] = "gelu";
    });
    EXPECT_ERROR_HAS(error_of([&] { load_hf_directory(dir, {}); }), "gelu");
    edit_config(dir, [](nlohmann::json& j) {
        j["activation_function"] = "relu";
        j.erase("ffn_dim");
    });
    EXPECT_ERROR_HAS(error_of([&] { load_hf_directory(dir, {}); }), "'ffn_dim'");
}

TEST(HfTest, ShapeMismatchNamesTensor) {
    const std::string dir = saved_tiny(Arch::Llama, "hf-shape");
    // 4 KV heads instead of 2: k_proj in the file no longer matches.
    edit_config(dir, [](nlohmann::json& j) { j["num_key_value_heads"] = 4; });
    const std::string msg = error_of([&] { load_hf_directory(dir, {}); });
    EXPECT_ERROR_HAS(msg, "model.layers.0.self_attn.k_proj.weight");
    EXPECT_ERROR_HAS(msg, "[8, 16]");
    EXPECT_ERROR_HAS(msg, "[16, 16]");
}

TEST(HfTest, MissingTensorAndMissingFiles) {
    std::shared_ptr<Model> m;
    const std::string dir = saved_tiny(Arch::Llama, "hf-missing", &m);
    SafetensorsFile all(dir + "/model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> ts;
    for (const auto& n : all.names())
        if (n != "model.layers.1.mlp.up_proj.weight") ts.emplace_back(n, all.get(n));
    save_safetensors(dir + "/model.safetensors", ts);
    EXPECT_ERROR_HAS(error_of([&] { load_hf_directory(dir, {}); }), "model.layers.1.mlp.up_proj.weight");

    fs::remove(dir + "/model.safetensors");
    EXPECT_ERROR_HAS(error_of([&] { load_hf_directory(dir, {}); }), "model.safetensors");

    const std::string d2 = saved_tiny(Arch::Llama, "hf-notok");
    fs::remove(d2 + "/tokenizer.model");
    EXPECT_ERROR_HAS(error_of([&] { load_hf_directory(d2, {}); }), "tokenizer");
    LoadOptions o;
    o.tokenizer_path = test::stories_tok_model();
    EXPECT_NO_THROW(load_hf_directory(d2, o));
}

TEST(HfTest, NanWeightWarns) {
    const std::string src = temp_dir("hf-nan-src");
    auto m = make_tiny_model(Arch::Llama, false, false, src);
    m->weights.layers[1].wv[2][3] = INFINITY;
    const std::string out = temp_dir("hf-nan") + "/m";
    save_hf_directory(*m, out);
    auto back = load_hf_directory(out, {});
    ASSERT_EQ(back->warnings.size(), 1u);
    EXPECT_ERROR_HAS(back->warnings[0], "model.layers.1.self_attn.v_proj.weight (layer 1; 1 of ");
}

TEST(HfTest, Bf16WeightsAreConvertedToFloat32) {
    std::shared_ptr<Model> m;
    const std::string dir = saved_tiny(Arch::Llama, "hf-bf16", &m, true);
    SafetensorsFile all(dir + "/model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> ts;
    for (const auto& n : all.names()) ts.emplace_back(n, all.get(n).to(at::kBFloat16));
    save_safetensors(dir + "/model.safetensors", ts);
    auto back = load_hf_directory(dir, {});
    EXPECT_EQ(back->weights.tok_emb.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(back->weights.layers[0].bq, m->weights.layers[0].bq.to(at::kBFloat16).to(at::kFloat)));
}

}  // namespace
