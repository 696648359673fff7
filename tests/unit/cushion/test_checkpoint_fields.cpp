// A calibration checkpoint's search and tuning states with a field missing or of the wrong type: the error names
// the field (issue "hardening"; before, the JSON library's "type_error.302" / "out_of_range.403"), and the search or
// tuner is left as it was.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "cushion/cushion.h"
#include "cushion/greedy_search.h"
#include "cushion/prefix_tuner.h"
#include "test_support.h"
#include "tiny_models.h"

using namespace cushion;
using namespace cushion::test;
using nlohmann::json;

namespace {

std::shared_ptr<const Model> tiny() {
    TinySpec s;
    s.seed = 3;
    s.vocab = 13;
    return make_tiny(s).first;
}

const std::vector<int32_t> kSample = {5, 7, 3, 9, 4, 8, 6, 10, 11, 12, 3, 4};
const std::vector<std::vector<int32_t>> kDocs = {{1, 5, 7, 3, 9, 4}, {1, 8, 6, 6, 10, 11, 12, 3}, {1, 4, 4, 9}};

std::string edited(const std::string& state, const std::function<void(json&)>& fn) {
    json j = json::parse(state);
    fn(j);
    return j.dump();
}

}  // namespace

TEST(CheckpointFields, SearchStateNamesTheField) {
    auto m = tiny();
    GreedySearchOptions o;
    o.max_prefix = 3;
    GreedySearch s(m, kSample, o);
    s.override_step(6);
    const std::string state = s.state_json();
    GreedySearch fresh(m, kSample, o);
    const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
        {[](json& j) { j["history"]["steps"][0]["lq_before"] = "x"; },
         "search state: field 'history.steps[0].lq_before' must be a number, it is \"x\""},
        {[](json& j) { j["history"].erase("initial_lq"); }, "search state: field 'history.initial_lq' is missing"},
        {[](json& j) { j["history"]["prefix"][1] = 1e300; },
         "search state: field 'history.prefix[1]' must be a whole number in [0, 12], it is 1e+300"},
        {[](json& j) { j["history"]["prefix"][1] = 13; },
         "search state: field 'history.prefix[1]' must be a whole number in [0, 12], it is 13"},
        {[](json& j) { j["history"]["steps"] = json::object(); },
         "search state: field 'history.steps' must be an array, it is an object"},
        {[](json& j) { j["history"]["steps"][0]["accepted"] = 1; },
         "search state: field 'history.steps[0].accepted' must be true or false, it is 1"},
        {[](json& j) { j["steps_done"] = -2; }, "search state: field 'steps_done' must be a whole number in [0, 2147483647], it is -2"},
        {[](json& j) { j["format"] = 3; }, "search state: field 'format' must be a string, it is 3"},
        {[](json& j) { j["format"] = "other"; }, "search state: not a search state"},
    };
    for (const auto& c : cases) {
        const auto& fn = c.first;
        const std::string& want = c.second;
        const std::string e = error_of([&] { fresh.restore(edited(state, fn)); });
        EXPECT_EQ(e, want);
        EXPECT_EQ(fresh.prefix(), std::vector<int32_t>{1}) << "the search changed on: " << want;
    }
    fresh.restore(state);
    EXPECT_EQ(fresh.prefix(), s.prefix());
}

TEST(CheckpointFields, TuningStateNamesTheField) {
    auto m = tiny();
    const Cushion c = make_cushion(*m, {1, 6});
    PrefixTuneOptions o;
    o.batch_size = 2;
    PrefixTuner t(m, c, kDocs, o);
    t.step();
    std::vector<std::pair<std::string, at::Tensor>> ts;
    std::string state;
    t.save_state(&ts, &state);
    std::map<std::string, at::Tensor> tensors(ts.begin(), ts.end());
    PrefixTuner fresh(m, c, kDocs, o);
    const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
        {[](json& j) { j["epoch"] = "one"; }, "tuning state: field 'epoch' must be a whole number in [0, 2147483647], it is \"one\""},
        {[](json& j) { j["t"] = 1e300; }, "tuning state: field 't' must be a whole number in [0, 2147483647], it is 1e+300"},
        {[](json& j) { j["history"][0].erase("grad_norm"); }, "tuning state: field 'history[0].grad_norm' is missing"},
        {[](json& j) { j["history"][0] = 5; }, "tuning state: field 'history[0]' must be an object, it is 5"},
        {[](json& j) { j["prefix_ids"] = "1,6"; },
         "tuning state: field 'prefix_ids' must be an array of whole numbers, it is \"1,6\""},
        {[](json& j) { j["settings"] = 2; }, "tuning state: field 'settings' must be an object, it is 2"},
    };
    for (const auto& c : cases) {
        const auto& fn = c.first;
        const std::string& want = c.second;
        EXPECT_EQ(error_of([&] { fresh.restore(tensors, edited(state, fn)); }), want);
        EXPECT_EQ(fresh.steps_done(), 0) << "the tuner changed on: " << want;
    }
    fresh.restore(tensors, state);
    EXPECT_EQ(fresh.steps_done(), 1);
}
