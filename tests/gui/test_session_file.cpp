// The studio's session file reader (views/session.cpp) alone: a field of the wrong type is an error naming the
// field (issue "hardening"; a string where a number belongs was silently the default), absent fields take their
// defaults, and what it writes reads back. No window, no display.
#include <gtest/gtest.h>

#include <QByteArray>
#include <QString>

#include <functional>
#include <stdexcept>
#include <string>

#include "session.h"

namespace {

std::string error_of(const std::string& json) {
    try {
        studio::sessionFromJson(QByteArray::fromStdString(json), "/tmp/x.cushionstudio");
    } catch (const std::runtime_error& e) {
        return e.what();
    }
    return "<no error>";
}

std::string session(const std::string& fields) {
    return "{\"format\":\"cushion-studio-session\",\"version\":1" + (fields.empty() ? "" : "," + fields) + "}";
}

}  // namespace

TEST(SessionFile, FieldsOfTheWrongTypeAreNamed) {
    EXPECT_EQ(error_of(session("\"search\":{\"tau\":\"0.5\"}")), "session file: field 'search.tau' must be a number");
    EXPECT_EQ(error_of(session("\"quantization\":{\"wbits\":\"8\"}")),
              "session file: field 'quantization.wbits' is not an integer");
    EXPECT_EQ(error_of(session("\"quantization\":{\"smoothquant\":1}")),
              "session file: field 'quantization.smoothquant' must be true or false");
    EXPECT_EQ(error_of(session("\"model\":\"stories.bin\"")), "session file: field 'model' must be an object");
    EXPECT_EQ(error_of(session("\"model\":{\"path\":5}")), "session file: field 'model.path' must be a string");
    EXPECT_EQ(error_of(session("\"search\":{\"prefix\":[1,\"a\"]}")),
              "session file: field 'search.prefix[1]' is not an integer");
    EXPECT_EQ(error_of(session("\"search\":{\"prefix\":[1,-3]}")),
              "session file: field 'search.prefix[1]' must be a token id (a whole number >= 0)");
    EXPECT_EQ(error_of(session("\"tuning\":{\"points\":[{\"ce\":\"low\"}]}")),
              "session file: field 'tuning.points[0].ce' must be a number");
    EXPECT_EQ(error_of(session("\"tuning\":{\"points\":{}}")), "session file: field 'tuning.points' must be an array");
    EXPECT_EQ(error_of(session("\"view\":{\"site\":1e12}")),
              "session file: field 'view.site' must be a whole number within 32 bits");
    EXPECT_EQ(error_of("[1]"), "not a session file (the JSON is not an object)");
}

TEST(SessionFile, DefaultsAndRoundTrip) {
    const studio::SessionData d = studio::sessionFromJson(QByteArray::fromStdString(session("")), "/tmp/x.cushionstudio");
    EXPECT_EQ(d.search.tau, studio::SearchSettings().tau);
    EXPECT_EQ(d.site, 3);
    studio::SessionData s = d;
    s.search.tau = 0.25;
    s.prefix = {1, 42};
    s.quant.smoothquant_alpha = 0.8;
    const QByteArray j = studio::sessionToJson(s, "/tmp/x.cushionstudio");
    const studio::SessionData back = studio::sessionFromJson(j, "/tmp/x.cushionstudio");
    EXPECT_EQ(back.search.tau, 0.25);
    EXPECT_EQ(back.prefix, (std::vector<int>{1, 42}));
    EXPECT_DOUBLE_EQ(back.quant.smoothquant_alpha, 0.8);
}
