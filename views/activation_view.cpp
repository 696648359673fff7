#include "activation_view.h"

#include <QComboBox>
#include <QDoubleSpinBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QTabWidget>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>

#include "heatmap_canvas.h"

namespace studio {

ActivationView::ActivationView(QWidget* parent) : QWidget(parent) {
    auto* v = new QVBoxLayout(this);
    v->setContentsMargins(0, 0, 0, 0);
    auto* controls = new QHBoxLayout;
    site_combo_ = new QComboBox;
    site_combo_->setObjectName("siteCombo");
    for (int s = 0; s < kSites; ++s) site_combo_->addItem(siteLabel(s) + "  (" + siteName(s) + ")", s);
    layer_spin_ = new QSpinBox;
    layer_spin_->setObjectName("layerSpin");
    layer_spin_->setRange(0, 0);
    threshold_ = new QDoubleSpinBox;
    threshold_->setObjectName("thresholdSpin");
    threshold_->setRange(1, 100000);
    threshold_->setDecimals(1);
    threshold_->setValue(64);  // PrefixQuant's outlier-token threshold
    threshold_->setToolTip(tr("A token is an outlier when max |x| / median |x| over its channels exceeds this "
                              "at the chosen site in any layer"));
    auto* reset = new QPushButton(tr("Reset zoom"));
    controls->addWidget(new QLabel(tr("Probe site")));
    controls->addWidget(site_combo_);
    controls->addSpacing(12);
    controls->addWidget(new QLabel(tr("Channel map layer")));
    controls->addWidget(layer_spin_);
    controls->addSpacing(12);
    controls->addWidget(new QLabel(tr("Outlier ratio ≥")));
    controls->addWidget(threshold_);
    controls->addStretch(1);
    controls->addWidget(reset);
    v->addLayout(controls);

    layer_canvas_ = new HeatmapCanvas;
    layer_canvas_->setObjectName("layerTokenCanvas");
    layer_canvas_->setAxisNames(tr("layer"), tr("token"));
    layer_canvas_->setShowTokenStrip(true);
    layer_canvas_->clearData(tr("Open a model and type a prompt"));
    channel_canvas_ = new HeatmapCanvas;
    channel_canvas_->setObjectName("channelTokenCanvas");
    channel_canvas_->setAxisNames(tr("channel"), tr("token"));
    channel_canvas_->clearData(tr("Channels x tokens of the selected layer"));
    auto* split = new QSplitter(Qt::Vertical);
    split->addWidget(layer_canvas_);
    split->addWidget(channel_canvas_);
    split->setStretchFactor(0, 2);
    split->setStretchFactor(1, 3);
    tabs_ = new QTabWidget;
    tabs_->setObjectName("centreTabs");
    tabs_->setDocumentMode(true);
    tabs_->addTab(split, tr("Activations"));
    tabs_->addTab(buildCompareView(), tr("Before / after cushion"));
    v->addWidget(tabs_, 1);
    selection_ = new QLabel(tr("Hover a cell for its token, layer, channel and value; click to select."));
    selection_->setObjectName("selectionLabel");
    selection_->setTextFormat(Qt::PlainText);  // token pieces such as <s> are not markup
    selection_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    v->addWidget(selection_);

    // Tooltips and selection.
    layer_canvas_->setTooltipProvider([this](int l, int t, float val) {
        if (!data_) return QString();
        const float ratio = data_->token_ratio[site()][size_t(l) * data_->tokens + t];
        return tr("%1\nposition %2, layer %3, %4\nmax |x| = %5   max/median = %6")
            .arg(tokenLabel(t))
            .arg(t)
            .arg(l)
            .arg(siteLabel(site()))
            .arg(val, 0, 'g', 4)
            .arg(ratio, 0, 'f', 1);
    });
    channel_canvas_->setTooltipProvider([this](int c, int t, float val) {
        if (!data_) return QString();
        return tr("%1\nposition %2, layer %3, %4\nchannel %5   |x| = %6")
            .arg(tokenLabel(t))
            .arg(t)
            .arg(layer_)
            .arg(siteLabel(site()))
            .arg(c)
            .arg(val, 0, 'g', 4);
    });
    connect(layer_canvas_, &HeatmapCanvas::cellHovered, this, [this](int l, int t) {
        if (data_) selection_->setText(layer_canvas_->tooltipText(l, t).replace('\n', "   "));
    });
    connect(channel_canvas_, &HeatmapCanvas::cellHovered, this, [this](int c, int t) {
        if (data_) selection_->setText(channel_canvas_->tooltipText(c, t).replace('\n', "   "));
    });
    connect(layer_canvas_, &HeatmapCanvas::cellClicked, this, [this](int l, int t) {
        selected_token_ = t;
        selectLayer(l);
        selection_->setText(tr("Selected: ") + layer_canvas_->tooltipText(l, t).replace('\n', "   "));
    });
    connect(channel_canvas_, &HeatmapCanvas::cellClicked, this, [this](int c, int t) {
        selected_token_ = t;
        layer_canvas_->setSelection(layer_, t);
        selection_->setText(tr("Selected: ") + channel_canvas_->tooltipText(c, t).replace('\n', "   "));
    });
    // Both maps share the token axis: zoom and pan together.
    connect(layer_canvas_, &HeatmapCanvas::xViewChanged, channel_canvas_, &HeatmapCanvas::setXView);
    connect(channel_canvas_, &HeatmapCanvas::xViewChanged, layer_canvas_, &HeatmapCanvas::setXView);
    connect(reset, &QPushButton::clicked, this, [this] {
        layer_canvas_->resetView();
        channel_canvas_->resetView();
    });
    connect(site_combo_, &QComboBox::currentIndexChanged, this, [this] {
        refreshMaps();
        refreshCompare();
        emit viewChanged();
    });
    connect(layer_spin_, &QSpinBox::valueChanged, this, [this](int l) { selectLayer(l); });
    connect(threshold_, &QDoubleSpinBox::valueChanged, this, [this] {
        refreshMaps();
        refreshCompare();
        emit viewChanged();
    });
    connect(tabs_, &QTabWidget::currentChanged, this, [this](int i) {
        if (i == 1) emit compareTabShown();
    });
    compare_empty_ = tr("Open a model");
    refreshCompare();
}

void ActivationView::setModel(const ModelInfoPtr& info) {
    model_ = info;
    data_.reset();
    compare_.reset();
    if (!info) return;
    layer_spin_->setRange(0, static_cast<int>(info->layers) - 1);
    layer_ = std::min<int>(layer_, static_cast<int>(info->layers) - 1);
    QStringList rows;
    for (int l = 0; l < info->layers; ++l) rows << QString::number(l);
    layer_canvas_->setRowLabels(rows);
}

void ActivationView::setData(const HeatmapDataPtr& d) {
    data_ = d;
    if (selected_token_ >= d->tokens) selected_token_ = -1;
    refreshMaps();
}

void ActivationView::setComparison(const CompareDataPtr& d, const QString& empty_message, bool tuned) {
    compare_ = d;
    compare_empty_ = empty_message;
    compare_tuned_ = tuned;
    refreshCompare();
}

bool ActivationView::compareShown() const { return tabs_->currentIndex() == 1; }
void ActivationView::showCompare() { tabs_->setCurrentIndex(1); }
double ActivationView::threshold() const { return threshold_->value(); }
void ActivationView::setThreshold(double t) { threshold_->setValue(t); }
void ActivationView::resetZoom() {
    layer_canvas_->resetView();
    channel_canvas_->resetView();
}
QString ActivationView::selectionText() const { return selection_->text(); }
QString ActivationView::compareSummary() const { return compare_label_->text(); }

int ActivationView::site() const { return site_combo_->currentData().toInt(); }

void ActivationView::setSite(int s) {
    const int i = site_combo_->findData(s);
    if (i >= 0) site_combo_->setCurrentIndex(i);
}

void ActivationView::selectLayer(int l) {
    if (!model_) return;
    l = std::clamp(l, 0, static_cast<int>(model_->layers) - 1);
    layer_ = l;
    if (layer_spin_->value() != l) layer_spin_->setValue(l);
    layer_canvas_->setSelection(selected_token_ >= 0 ? l : -1, selected_token_);
    refreshChannelMap();
}

QString ActivationView::tokenLabel(int t) const {
    if (!data_ || t < 0 || t >= data_->tokens) return {};
    return QString("'%1'  [%2, id %3]").arg(data_->token_text[t], data_->token_piece[t]).arg(data_->token_ids[t]);
}

void ActivationView::refreshMaps() {
    if (!data_) return;
    const int s = site();
    const int L = data_->layers, T = data_->tokens;
    layer_canvas_->setTitle(tr("Per-token max |x| at %1  |  %2 layers x %3 tokens").arg(siteLabel(s)).arg(L).arg(T));
    layer_canvas_->setData(L, T, data_->token_max[s]);
    std::vector<bool> hot(T, false);
    const double thr = threshold_->value();
    for (int l = 0; l < L; ++l)
        for (int t = 0; t < T; ++t)
            if (data_->token_ratio[s][size_t(l) * T + t] >= thr) hot[t] = true;
    layer_canvas_->setTokenStrip(data_->token_text, hot);
    if (selected_token_ >= 0) layer_canvas_->setSelection(layer_, selected_token_);
    refreshChannelMap();
}

void ActivationView::refreshChannelMap() {
    if (!data_) return;
    const int s = site();
    const ChannelMap* m = data_->channelMap(layer_, s);
    if (!m) {
        // Too large to keep every layer: probe again for this one.
        channel_canvas_->clearData(tr("Probing layer %1…").arg(layer_));
        emit probeNeeded();
        return;
    }
    channel_canvas_->setTitle(
        tr("|x| at %1, layer %2  |  %3 channels x %4 tokens").arg(siteLabel(s)).arg(layer_).arg(m->channels).arg(m->tokens));
    channel_canvas_->setData(m->channels, m->tokens, m->values);
    const QRectF v = layer_canvas_->view();
    channel_canvas_->setXView(v.left(), v.right());
    // The selected token's column, with its largest channel marked: where its outlier lives.
    if (selected_token_ >= 0 && selected_token_ < m->tokens) {
        int best = 0;
        for (int c = 1; c < m->channels; ++c)
            if (m->values[size_t(c) * m->tokens + selected_token_] > m->values[size_t(best) * m->tokens + selected_token_])
                best = c;
        channel_canvas_->setSelection(best, selected_token_);
    } else {
        channel_canvas_->setSelection(-1, -1);
    }
}

QWidget* ActivationView::buildCompareView() {
    auto* w = new QWidget;
    auto* v = new QVBoxLayout(w);
    v->setContentsMargins(0, 4, 0, 0);
    compare_label_ = new QLabel;
    compare_label_->setObjectName("compareSummary");
    compare_label_->setTextFormat(Qt::PlainText);
    compare_label_->setWordWrap(true);
    compare_label_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    v->addWidget(compare_label_);
    auto* split = new QSplitter(Qt::Horizontal);
    before_canvas_ = new HeatmapCanvas;
    before_canvas_->setObjectName("beforeCanvas");
    after_canvas_ = new HeatmapCanvas;
    after_canvas_->setObjectName("afterCanvas");
    for (HeatmapCanvas* c : {before_canvas_, after_canvas_}) {
        c->setAxisNames(tr("layer"), QString());  // the token strip names the columns; the title needs the room
        c->setShowTokenStrip(true);
        split->addWidget(c);
    }
    auto tip = [this](bool after) {
        return [this, after](int l, int t, float val) {
            if (!compare_) return QString();
            const HeatmapData& d = after ? *compare_->after : *compare_->before;
            if (t < 0 || t >= d.tokens) return QString();
            const float ratio = d.token_ratio[site()][size_t(l) * d.tokens + t];
            return tr("'%1'  [%2, id %3]\n%4position %5, layer %6, %7\nmax |x| = %8   max/median = %9")
                .arg(d.token_text[t], d.token_piece[t])
                .arg(d.token_ids[t])
                .arg(after ? tr("after the cushion, ") : QString())
                .arg(t)
                .arg(l)
                .arg(siteLabel(site()))
                .arg(val, 0, 'g', 4)
                .arg(ratio, 0, 'f', 1);
        };
    };
    before_canvas_->setTooltipProvider(tip(false));
    after_canvas_->setTooltipProvider(tip(true));
    connect(before_canvas_, &HeatmapCanvas::cellHovered, this, [this](int l, int t) {
        if (compare_) selection_->setText(before_canvas_->tooltipText(l, t).replace('\n', "   "));
    });
    connect(after_canvas_, &HeatmapCanvas::cellHovered, this, [this](int l, int t) {
        if (compare_) selection_->setText(after_canvas_->tooltipText(l, t).replace('\n', "   "));
    });
    v->addWidget(split, 1);
    return w;
}

void ActivationView::refreshCompare() {
    if (!compare_) {
        const QString& msg = compare_empty_;
        before_canvas_->clearData(tr("The prompt without a cushion"));
        after_canvas_->clearData(msg);
        compare_label_->setText(tr("Left: the prompt as typed (with its <bos>). Right: the same text after the current cushion "
                                   "(its KV prepended, no <bos> of its own). Both on one colour scale."));
        return;
    }
    const int s = site();
    const HeatmapData& b = *compare_->before;
    const HeatmapData& a = *compare_->after;
    float hi = 0, lo = 0;
    for (const auto* vals : {&b.token_max[s], &a.token_max[s]})
        for (float x : *vals)
            if (x > 0 && std::isfinite(x)) {
                hi = std::max(hi, x);
                lo = lo == 0 ? x : std::min(lo, x);
            }
    const double shared_hi = hi > 0 ? hi : 1;
    const double shared_lo = std::max<double>(lo, shared_hi * 1e-4);
    const double thr = threshold_->value();
    auto show = [&](HeatmapCanvas* c, const HeatmapData& d, const QString& title) {
        c->setFixedScale(shared_lo, shared_hi);
        c->setTitle(title);
        c->setData(d.layers, d.tokens, d.token_max[s]);
        std::vector<bool> hot(d.tokens, false);
        for (int l = 0; l < d.layers; ++l)
            for (int t = 0; t < d.tokens; ++t)
                if (d.token_ratio[s][size_t(l) * d.tokens + t] >= thr) hot[t] = true;
        c->setTokenStrip(d.token_text, hot);
    };
    const int cushion_tokens = compare_->prefix_len;
    show(before_canvas_, b, tr("Before (no cushion)"));
    show(after_canvas_, a, tr("After (%1%2-token cushion)").arg(compare_tuned_ ? tr("tuned ") : QString()).arg(cushion_tokens));
    // Figures over the text tokens (the before map's position 0 is <bos>).
    auto stats = [&](const HeatmapData& d, int first, float* mx, float* ratio, int* hot) {
        *mx = 0;
        *ratio = 0;
        *hot = 0;
        for (int t = first; t < d.tokens; ++t) {
            bool h = false;
            for (int l = 0; l < d.layers; ++l) {
                const size_t i = size_t(l) * d.tokens + t;
                *mx = std::max(*mx, d.token_max[s][i]);
                *ratio = std::max(*ratio, d.token_ratio[s][i]);
                h |= d.token_ratio[s][i] >= thr;
            }
            *hot += h;
        }
    };
    float bmx, brt, amx, art, bosmx = 0;
    int bhot, ahot;
    stats(b, 1, &bmx, &brt, &bhot);
    stats(a, 0, &amx, &art, &ahot);
    for (int l = 0; l < b.layers; ++l) bosmx = std::max(bosmx, b.token_max[s][size_t(l) * b.tokens]);
    compare_label_->setText(tr("Cushion %1. At %2 over the text tokens: largest |x| %3 → %4, largest max/median %5 → %6, "
                               "tokens with max/median ≥ %7: %8 → %9. Without a cushion, <bos> reaches |x| %10.")
                                .arg(compare_->prefix_text, siteLabel(s))
                                .arg(bmx, 0, 'g', 4)
                                .arg(amx, 0, 'g', 4)
                                .arg(brt, 0, 'f', 1)
                                .arg(art, 0, 'f', 1)
                                .arg(thr, 0, 'f', 0)
                                .arg(bhot)
                                .arg(ahot)
                                .arg(bosmx, 0, 'g', 4));
}

}  // namespace studio
