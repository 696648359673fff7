// JSON fields read with errors naming the file and the field (issue "hardening"), never the JSON library's text
// ("[json.exception.type_error.302] type must be number, but is string", "out_of_range.403"); the search and
// tuning states of a checkpoint read through it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/json_file.h"
#include "test_support.h"

using namespace cushion;
using namespace cushion::test;
using nlohmann::json;

TEST(JsonFields, ErrorsNameTheFileAndTheField) {
    const json j = json::parse(R"({"a": 3, "b": 3.0, "c": 3.5, "d": 1e300, "e": "x", "f": [1, 2, "z"], "g": {"h": [{"i": true}, 7]},
                                  "n": null, "big": 18446744073709551615, "neg": -4})");
    const JsonFields r(j, "f.json (metadata 'x')");
    EXPECT_EQ(r.integer("a"), 3);
    EXPECT_EQ(r.integer("b"), 3);  // 3.0 is a whole number
    EXPECT_DOUBLE_EQ(r.number("c"), 3.5);
    EXPECT_EQ(r.string("e"), "x");
    EXPECT_EQ(r.integer_or("missing", 9), 9);
    EXPECT_EQ(r.integer_or("n", 9), 9);  // null is absent
    EXPECT_TRUE(r.object("g").array("h").at(0).boolean("i"));
    EXPECT_EQ(error_of([&] { r.integer("c"); }), "f.json (metadata 'x'): field 'c' must be a whole number, it is 3.5");
    EXPECT_EQ(error_of([&] { r.integer("d"); }), "f.json (metadata 'x'): field 'd' must be a whole number, it is 1e+300");
    EXPECT_EQ(error_of([&] { r.integer("e"); }), "f.json (metadata 'x'): field 'e' must be a whole number, it is \"x\"");
    EXPECT_EQ(error_of([&] { r.integer("big"); }),
              "f.json (metadata 'x'): field 'big' must be a whole number, it is 18446744073709551615");
    EXPECT_EQ(error_of([&] { r.integer("neg", 0, 10); }),
              "f.json (metadata 'x'): field 'neg' must be a whole number in [0, 10], it is -4");
    EXPECT_EQ(error_of([&] { r.number("e"); }), "f.json (metadata 'x'): field 'e' must be a number, it is \"x\"");
    EXPECT_EQ(error_of([&] { r.string("a"); }), "f.json (metadata 'x'): field 'a' must be a string, it is 3");
    EXPECT_EQ(error_of([&] { r.boolean("a"); }), "f.json (metadata 'x'): field 'a' must be true or false, it is 3");
    EXPECT_EQ(error_of([&] { r.number("n"); }), "f.json (metadata 'x'): field 'n' is missing");
    EXPECT_EQ(error_of([&] { r.number("zzz"); }), "f.json (metadata 'x'): field 'zzz' is missing");
    EXPECT_EQ(error_of([&] { r.integers("f"); }),
              "f.json (metadata 'x'): field 'f[2]' must be a whole number, it is \"z\"");
    EXPECT_EQ(error_of([&] { r.object("e"); }), "f.json (metadata 'x'): field 'e' must be an object, it is \"x\"");
    EXPECT_EQ(error_of([&] { r.array("g"); }), "f.json (metadata 'x'): field 'g' must be an array, it is an object");
    EXPECT_EQ(error_of([&] { r.object("g").array("h").at(1); }),
              "f.json (metadata 'x'): field 'g.h[1]' must be an object, it is 7");
    EXPECT_EQ(error_of([&] { r.object("g").array("h").at(2); }), "f.json (metadata 'x'): field 'g.h[2]' is missing");
    EXPECT_EQ(error_of([&] { r.object("g").array("h").at(0).number("i"); }),
              "f.json (metadata 'x'): field 'g.h[0].i' must be a number, it is true");
    EXPECT_EQ(error_of([&] { r.string_or("a", ""); }), "f.json (metadata 'x'): field 'a' must be a string, it is 3");
    const json arr = json::parse("[1]");
    EXPECT_EQ(error_of([&] { JsonFields(arr, "a.json").integer("k"); }),
              "a.json: the document must be an object, it is an array");
}
