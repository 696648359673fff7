#include "heatmap_canvas.h"

#include <imgui.h>
#include <backends/imgui_impl_opengl3.h>

#include <QExposeEvent>
#include <QFile>
#include <QKeyEvent>
#include <QMouseEvent>
#include <QOpenGLContext>
#include <QOpenGLFramebufferObject>
#include <QSurfaceFormat>
#include <QVBoxLayout>
#include <QWheelEvent>
#include <QWindow>

#include <algorithm>
#include <cmath>

#include "analysis/colormap.h"
#include "base/resources.h"

namespace studio {

using cushion::inferno;
using cushion::LogScale;

namespace {

constexpr float kLeft = 58, kTop = 22, kRight = 84, kAxis = 18, kStrip = 30;
constexpr double dLeft = kLeft, dTop = kTop, dRight = kRight, dAxis = kAxis, dStrip = kStrip;

ImU32 rgba(int r, int g, int b, int a = 255) { return IM_COL32(r, g, b, a); }

double niceStep(double raw) {
    if (raw <= 1) return 1;
    const double p = std::pow(10.0, std::floor(std::log10(raw)));
    for (double m : {1.0, 2.0, 5.0, 10.0})
        if (m * p >= raw) return m * p;
    return 10 * p;
}

QString fmtValue(double v) {
    if (v == 0) return "0";
    if (std::fabs(v) >= 1000 || std::fabs(v) < 0.01) return QString::number(v, 'g', 3);
    return QString::number(v, 'f', std::fabs(v) >= 100 ? 0 : (std::fabs(v) >= 10 ? 1 : 2));
}

void text(ImDrawList* dl, float x, float y, ImU32 col, const QString& s) {
    const QByteArray u = s.toUtf8();
    dl->AddText(ImVec2(x, y), col, u.constData(), u.constData() + u.size());
}

float textWidth(const QString& s) {
    const QByteArray u = s.toUtf8();
    return ImGui::CalcTextSize(u.constData(), u.constData() + u.size()).x;
}

// The canvas font: DejaVu Sans from the shipped resources (resources/fonts), read once for every canvas.
// Empty when missing: the canvases then use ImGui's built-in font (Latin-1 only), with a warning.
const QByteArray& fontData() {
    static const QByteArray data = [] {
        QString path = "resources/fonts/DejaVuSans.ttf";
        try {
            path = QString::fromStdString(cushion::resource_dir()) + "/fonts/DejaVuSans.ttf";
        } catch (const std::exception&) {
        }
        QFile f(path);
        if (!f.open(QIODevice::ReadOnly)) {
            qWarning("heatmap canvas: cannot read %s; token text outside Latin-1 will show as '?'", qPrintable(path));
            return QByteArray();
        }
        return f.readAll();
    }();
    return data;
}

// Token text: Latin with Latin Extended-A/B (byte-level BPE's "Ġ", "Ċ"), IPA, Greek, Cyrillic, General
// Punctuation, arrows, box drawing and Block Elements (SentencePiece's "▁"), and U+FFFD.
const ImWchar kGlyphRanges[] = {0x0020, 0x052F, 0x2000, 0x206F, 0x2190, 0x21FF, 0x2500, 0x259F, 0xFFFD, 0xFFFD, 0};

}  // namespace

// The native child window the canvas draws into. It only forwards: expose and update requests render a
// frame (HeatmapCanvas::renderAndSwap), input goes to the canvas' own event handlers (window coordinates
// are the canvas' widget coordinates: the container fills the canvas).
class HeatmapCanvasWindow : public QWindow {
public:
    explicit HeatmapCanvasWindow(HeatmapCanvas* canvas) : canvas_(canvas) {
        setSurfaceType(QSurface::OpenGLSurface);
        QSurfaceFormat fmt = QSurfaceFormat::defaultFormat();
        // Do not wait for vertical blank in the swap: two canvases swapping on the GUI thread must not cost
        // it up to two frames (requestUpdate already paces the redraws).
        fmt.setSwapInterval(0);
        setFormat(fmt);
    }

protected:
    bool event(QEvent* e) override {
        switch (e->type()) {
        case QEvent::UpdateRequest:
            if (isExposed()) canvas_->renderAndSwap();
            return true;
        case QEvent::Leave:
            canvas_->leaveEvent(e);
            return true;
        default:
            return QWindow::event(e);
        }
    }
    void exposeEvent(QExposeEvent*) override {
        if (isExposed()) canvas_->renderAndSwap();
    }
    void resizeEvent(QResizeEvent*) override { requestUpdate(); }
    void mousePressEvent(QMouseEvent* e) override {
        // The widget never sees this press: give it the keyboard focus a click on a QWidget would give.
        canvas_->setFocus(Qt::MouseFocusReason);
        canvas_->mousePressEvent(e);
    }
    void mouseMoveEvent(QMouseEvent* e) override { canvas_->mouseMoveEvent(e); }
    void mouseReleaseEvent(QMouseEvent* e) override { canvas_->mouseReleaseEvent(e); }
    void mouseDoubleClickEvent(QMouseEvent* e) override { canvas_->mouseDoubleClickEvent(e); }
    void wheelEvent(QWheelEvent* e) override { canvas_->wheelEvent(e); }
    void keyPressEvent(QKeyEvent* e) override { canvas_->keyPressEvent(e); }

private:
    HeatmapCanvas* canvas_;
};

void HeatmapCanvas::useDefaultSurfaceFormat() {
    QSurfaceFormat fmt;
    fmt.setVersion(3, 3);
    fmt.setProfile(QSurfaceFormat::CoreProfile);
    fmt.setDepthBufferSize(0);
    fmt.setStencilBufferSize(0);
    QSurfaceFormat::setDefaultFormat(fmt);
}

HeatmapCanvas::HeatmapCanvas(QWidget* parent) : QWidget(parent) {
    setMouseTracking(true);
    setFocusPolicy(Qt::StrongFocus);
    setMinimumSize(240, 120);
    window_ = new HeatmapCanvasWindow(this);
    container_ = QWidget::createWindowContainer(window_, this);  // takes ownership of the window
    container_->setFocusPolicy(Qt::NoFocus);
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(container_);
    clock_.start();
}

HeatmapCanvas::~HeatmapCanvas() {
    if (gl_ && ctx_ && makeCurrent()) {
        dropTextures();
        ImGuiContext* previous = ImGui::GetCurrentContext();
        ImGui::SetCurrentContext(ctx_);
        ImGui_ImplOpenGL3_Shutdown();
        ImGui::DestroyContext(ctx_);
        ImGui::SetCurrentContext(previous == ctx_ ? nullptr : previous);
        ctx_ = nullptr;
        doneCurrent();
    }
    delete gl_;  // before the container deletes the window
    gl_ = nullptr;
}

bool HeatmapCanvas::makeCurrent() {
    if (!window_->handle()) window_->create();
    if (!gl_) {
        gl_ = new QOpenGLContext(this);
        gl_->setFormat(window_->requestedFormat());
        if (!gl_->create()) qWarning("heatmap canvas: cannot create an OpenGL context");
    }
    if (!gl_->isValid() || !gl_->makeCurrent(window_)) return false;
    if (!ctx_) initializeGL();
    return true;
}

void HeatmapCanvas::doneCurrent() {
    if (gl_) gl_->doneCurrent();
}

void HeatmapCanvas::redraw() { window_->requestUpdate(); }

void HeatmapCanvas::prepareGl() {
    renderFrameNow();  // the context, ImGui state, and the backend's shaders and font texture (first frame)
}

QWindow* HeatmapCanvas::canvasWindow() const { return window_; }

void HeatmapCanvas::renderAndSwap() {
    if (!makeCurrent()) return;
    paintGL();
    gl_->swapBuffers(window_);
}

void HeatmapCanvas::initializeGL() {
    initializeOpenGLFunctions();
    GLint max_tex = 4096;
    glGetIntegerv(GL_MAX_TEXTURE_SIZE, &max_tex);
    max_texture_ = std::max(256, static_cast<int>(max_tex));
    IMGUI_CHECKVERSION();
    ImGuiContext* previous = ImGui::GetCurrentContext();
    ctx_ = ImGui::CreateContext();
    ImGui::SetCurrentContext(ctx_);
    ImGuiIO& io = ImGui::GetIO();
    io.IniFilename = nullptr;
    io.LogFilename = nullptr;
    ImGui::StyleColorsDark();
    ImGui::GetStyle().WindowPadding = ImVec2(0, 0);
    ImGui::GetStyle().WindowBorderSize = 0;
    const QByteArray& font = fontData();
    ImFontConfig cfg;
    cfg.FontDataOwnedByAtlas = false;  // fontData() keeps it
    font_loaded_ = !font.isEmpty() && io.Fonts->AddFontFromMemoryTTF(const_cast<char*>(font.constData()), font.size(),
                                                                     13.f, &cfg, kGlyphRanges);
    if (!font_loaded_) io.Fonts->AddFontDefault();
    io.Fonts->Build();
    ImGui_ImplOpenGL3_Init("#version 330");
    ImGui::SetCurrentContext(previous);
}

bool HeatmapCanvas::hasGlyph(unsigned c) const {
    if (!ctx_ || c > 0xFFFF) return false;
    ImGuiContext* previous = ImGui::GetCurrentContext();
    ImGui::SetCurrentContext(ctx_);
    const ImFontAtlas* atlas = ImGui::GetIO().Fonts;
    const bool found = !atlas->Fonts.empty() && atlas->Fonts[0]->FindGlyphNoFallback(static_cast<ImWchar>(c));
    ImGui::SetCurrentContext(previous);
    return found;
}

void HeatmapCanvas::dropTextures() {
    for (auto& [k, l] : levels_)
        if (l.tex) stale_textures_.push_back(l.tex);
    levels_.clear();
    if (!stale_textures_.empty() && gl_ && QOpenGLContext::currentContext() == gl_) {
        glDeleteTextures(static_cast<GLsizei>(stale_textures_.size()), stale_textures_.data());
        stale_textures_.clear();
    }
}

void HeatmapCanvas::setData(int rows, int cols, std::vector<float> values) {
    const bool same = rows == rows_ && cols == cols_;
    rows_ = rows;
    cols_ = cols;
    values_ = std::move(values);
    values_.resize(size_t(rows_) * cols_, 0.f);
    // Log scale from the largest value down to 1e-4 of it (or the smallest positive value, if larger).
    float hi = 0, lo_pos = 0;
    for (float v : values_) {
        if (!(v > 0) || !std::isfinite(v)) continue;
        hi = std::max(hi, v);
        lo_pos = lo_pos == 0 ? v : std::min(lo_pos, v);
    }
    hi_ = hi > 0 ? hi : 1;
    lo_ = lo_pos > 0 ? std::max<double>(lo_pos, hi_ * 1e-4) : hi_ * 1e-4;
    if (lo_ >= hi_) lo_ = hi_ / 10;
    if (fixed_hi_ > 0) {
        hi_ = fixed_hi_;
        lo_ = fixed_lo_ > 0 && fixed_lo_ < fixed_hi_ ? fixed_lo_ : fixed_hi_ * 1e-4;
    }
    for (auto& [k, l] : levels_)
        if (l.tex) stale_textures_.push_back(l.tex);
    levels_.clear();
    if (!same || view_.isEmpty()) resetView();
    if (selected_.x() >= cols_ || selected_.y() >= rows_) selected_ = {-1, -1};
    hovered_ = {-1, -1};
    redraw();
}

void HeatmapCanvas::setFixedScale(double lo, double hi) {
    fixed_lo_ = lo;
    fixed_hi_ = hi;
}

void HeatmapCanvas::clearData(const QString& message) {
    message_ = message;
    setData(0, 0, {});
    strip_text_.clear();
    strip_highlight_.clear();
}

void HeatmapCanvas::setTitle(const QString& t) {
    title_ = t;
    redraw();
}

void HeatmapCanvas::setAxisNames(const QString& r, const QString& c) {
    row_name_ = r;
    col_name_ = c;
    redraw();
}

void HeatmapCanvas::setRowLabels(const QStringList& labels) {
    row_labels_ = labels;
    redraw();
}

void HeatmapCanvas::setTokenStrip(const QStringList& t, const std::vector<bool>& h) {
    strip_text_ = t;
    strip_highlight_ = h;
    redraw();
}

void HeatmapCanvas::setShowTokenStrip(bool on) {
    show_strip_ = on;
    redraw();
}

void HeatmapCanvas::setSelection(int row, int col) {
    selected_ = (row < 0 || col < 0) ? QPoint(-1, -1) : QPoint(col, row);
    redraw();
}

float HeatmapCanvas::value(int row, int col) const {
    if (row < 0 || col < 0 || row >= rows_ || col >= cols_) return 0;
    return values_[size_t(row) * cols_ + col];
}

QRectF HeatmapCanvas::plotRect() const {
    const double bottom = dAxis + (show_strip_ ? dStrip : 0);
    return QRectF(dLeft, dTop, std::max(10.0, width() - dLeft - dRight), std::max(10.0, height() - dTop - bottom));
}

QPointF HeatmapCanvas::cellCenter(int row, int col) const {
    const QRectF p = plotRect();
    return {p.left() + (col + 0.5 - view_.x()) / view_.width() * p.width(),
            p.top() + (row + 0.5 - view_.y()) / view_.height() * p.height()};
}

QPoint HeatmapCanvas::cellAt(QPointF w) const {
    const QRectF p = plotRect();
    if (rows_ == 0 || !p.contains(w)) return {-1, -1};
    const int c = static_cast<int>(std::floor(view_.x() + (w.x() - p.left()) / p.width() * view_.width()));
    const int r = static_cast<int>(std::floor(view_.y() + (w.y() - p.top()) / p.height() * view_.height()));
    if (c < 0 || r < 0 || c >= cols_ || r >= rows_) return {-1, -1};
    return {c, r};
}

QString HeatmapCanvas::tooltipText(int row, int col) const {
    const float v = value(row, col);
    if (tooltip_) return tooltip_(row, col, v);
    return QString("%1 %2, %3 %4\nvalue %5").arg(row_name_).arg(row).arg(col_name_).arg(col).arg(fmtValue(v));
}

void HeatmapCanvas::resetView() {
    view_ = QRectF(0, 0, std::max(1, cols_), std::max(1, rows_));
    emitView();
    redraw();
}

void HeatmapCanvas::clampView() {
    const double cols = std::max(1, cols_), rows = std::max(1, rows_);
    double w = std::clamp(view_.width(), std::min(cols, 4.0), cols);
    double h = std::clamp(view_.height(), std::min(rows, 2.0), rows);
    double x = std::clamp(view_.x(), 0.0, cols - w);
    double y = std::clamp(view_.y(), 0.0, rows - h);
    view_ = QRectF(x, y, w, h);
}

void HeatmapCanvas::emitView() { emit xViewChanged(view_.x(), view_.x() + view_.width()); }

void HeatmapCanvas::setXView(double x0, double x1) {
    const QRectF before = view_;
    view_ = QRectF(x0, view_.y(), x1 - x0, view_.height());
    clampView();
    if (view_ != before) redraw();
}

void HeatmapCanvas::zoom(double fx, double fy, QPointF anchor) {
    const QRectF p = plotRect();
    const double ax = view_.x() + (anchor.x() - p.left()) / p.width() * view_.width();
    const double ay = view_.y() + (anchor.y() - p.top()) / p.height() * view_.height();
    const double w = view_.width() * fx, h = view_.height() * fy;
    view_ = QRectF(ax - (ax - view_.x()) * fx, ay - (ay - view_.y()) * fy, w, h);
    clampView();
    emitView();
    redraw();
}

// ------------------------------------------------------------------------------------------------ input

void HeatmapCanvas::mousePressEvent(QMouseEvent* e) {
    if (e->button() != Qt::LeftButton) return;
    pressed_ = true;
    dragging_ = false;
    press_pos_ = e->position();
    press_view_ = view_;
}

void HeatmapCanvas::mouseMoveEvent(QMouseEvent* e) {
    mouse_ = e->position();
    if (pressed_) {
        const QPointF d = e->position() - press_pos_;
        if (!dragging_ && std::hypot(d.x(), d.y()) > 4) dragging_ = true;
        if (dragging_) {
            const QRectF p = plotRect();
            view_ = press_view_.translated(-d.x() / p.width() * press_view_.width(),
                                           -d.y() / p.height() * press_view_.height());
            clampView();
            emitView();
        }
    }
    const QPoint c = cellAt(mouse_);
    if (c != hovered_) {
        hovered_ = c;
        if (c.x() >= 0) emit cellHovered(c.y(), c.x());
    }
    redraw();
}

void HeatmapCanvas::mouseReleaseEvent(QMouseEvent* e) {
    if (e->button() != Qt::LeftButton || !pressed_) return;
    pressed_ = false;
    if (!dragging_) {
        const QPoint c = cellAt(e->position());
        if (c.x() >= 0) {
            selected_ = c;
            emit cellClicked(c.y(), c.x());
        }
    }
    dragging_ = false;
    redraw();
}

void HeatmapCanvas::mouseDoubleClickEvent(QMouseEvent*) { resetView(); }

void HeatmapCanvas::wheelEvent(QWheelEvent* e) {
    const double steps = e->angleDelta().y() / 120.0;
    if (steps == 0) return;
    if (e->modifiers() & Qt::ShiftModifier) {
        view_.translate(-steps * 0.1 * view_.width(), 0);
        clampView();
        emitView();
        redraw();
    } else {
        const double f = std::pow(0.8, steps);
        const bool rows = e->modifiers() & Qt::ControlModifier;
        zoom(rows ? 1.0 : f, rows ? f : 1.0, e->position());
    }
    e->accept();
}

void HeatmapCanvas::leaveEvent(QEvent*) {
    mouse_ = {-1, -1};
    hovered_ = {-1, -1};
    redraw();
}

void HeatmapCanvas::keyPressEvent(QKeyEvent* e) {
    const QPointF centre = plotRect().center();
    switch (e->key()) {
    case Qt::Key_0:
    case Qt::Key_Home: resetView(); break;
    case Qt::Key_Plus:
    case Qt::Key_Equal: zoom(0.8, 1, centre); break;
    case Qt::Key_Minus: zoom(1.25, 1, centre); break;
    case Qt::Key_Left: view_.translate(-0.1 * view_.width(), 0); break;
    case Qt::Key_Right: view_.translate(0.1 * view_.width(), 0); break;
    case Qt::Key_Up: view_.translate(0, -0.1 * view_.height()); break;
    case Qt::Key_Down: view_.translate(0, 0.1 * view_.height()); break;
    default: QWidget::keyPressEvent(e); return;
    }
    clampView();
    emitView();
    redraw();
}

// ---------------------------------------------------------------------------------------------- drawing

const HeatmapCanvas::Level& HeatmapCanvas::level(int fx, int fy) {
    auto it = levels_.find({fx, fy});
    if (it != levels_.end()) return it->second;
    Level l;
    l.w = (cols_ + fx - 1) / fx;
    l.h = (rows_ + fy - 1) / fy;
    const LogScale scale{lo_, hi_};
    std::vector<uint32_t> px(size_t(l.w) * l.h);
    for (int r = 0; r < l.h; ++r)
        for (int c = 0; c < l.w; ++c) {
            float m = 0;
            for (int rr = r * fy; rr < std::min(rows_, (r + 1) * fy); ++rr) {
                const float* row = &values_[size_t(rr) * cols_];
                for (int cc = c * fx; cc < std::min(cols_, (c + 1) * fx); ++cc) m = std::max(m, row[cc]);
            }
            px[size_t(r) * l.w + c] = inferno(scale(m));
        }
    GLuint tex = 0;
    glGenTextures(1, &tex);
    glBindTexture(GL_TEXTURE_2D, tex);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_NEAREST);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_S, GL_CLAMP_TO_EDGE);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_WRAP_T, GL_CLAMP_TO_EDGE);
    glPixelStorei(GL_UNPACK_ALIGNMENT, 4);
    glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA, l.w, l.h, 0, GL_RGBA, GL_UNSIGNED_BYTE, px.data());
    l.tex = tex;
    return levels_[{fx, fy}] = l;
}

void HeatmapCanvas::paintGL() {
    if (!ctx_) return;
    QElapsedTimer t;
    t.start();
    if (!stale_textures_.empty()) {
        glDeleteTextures(static_cast<GLsizei>(stale_textures_.size()), stale_textures_.data());
        stale_textures_.clear();
    }
    ImGuiContext* previous = ImGui::GetCurrentContext();
    ImGui::SetCurrentContext(ctx_);
    ImGuiIO& io = ImGui::GetIO();
    const double dpr = window_->devicePixelRatio();
    io.DisplaySize = ImVec2(static_cast<float>(width()), static_cast<float>(height()));
    io.DisplayFramebufferScale = ImVec2(static_cast<float>(dpr), static_cast<float>(dpr));
    const double now = clock_.nsecsElapsed() / 1e9;
    io.DeltaTime = static_cast<float>(std::clamp(now - last_time_, 1e-4, 0.1));
    last_time_ = now;
    io.MousePos = mouse_.x() >= 0 ? ImVec2(static_cast<float>(mouse_.x()), static_cast<float>(mouse_.y()))
                                  : ImVec2(-FLT_MAX, -FLT_MAX);
    ImGui_ImplOpenGL3_NewFrame();
    ImGui::NewFrame();
    drawFrame();
    ImGui::Render();
    glViewport(0, 0, static_cast<int>(width() * dpr), static_cast<int>(height() * dpr));
    glClearColor(0.11f, 0.11f, 0.13f, 1.f);
    glClear(GL_COLOR_BUFFER_BIT);
    ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
    if (sync_frames_) glFinish();
    ImGui::SetCurrentContext(previous);
    last_frame_ms_ = t.nsecsElapsed() / 1e6;
    ++frames_;
}

double HeatmapCanvas::renderFrameNow() {
    if (!makeCurrent()) return 0;
    const bool sync = sync_frames_;
    sync_frames_ = true;
    paintGL();  // into the back buffer, not swapped
    sync_frames_ = sync;
    doneCurrent();
    return last_frame_ms_;
}

QImage HeatmapCanvas::grabFramebuffer() {
    if (!makeCurrent()) return {};
    const double dpr = window_->devicePixelRatio();
    QImage img;
    {
        QOpenGLFramebufferObject fbo(QSize(int(width() * dpr), int(height() * dpr)));
        fbo.bind();
        paintGL();
        img = fbo.toImage();
        fbo.release();
    }
    doneCurrent();
    img.setDevicePixelRatio(dpr);
    return img;
}

void HeatmapCanvas::drawFrame() {
    ImGui::SetNextWindowPos(ImVec2(0, 0));
    ImGui::SetNextWindowSize(ImGui::GetIO().DisplaySize);
    ImGui::Begin("##heatmap", nullptr,
                 ImGuiWindowFlags_NoDecoration | ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoSavedSettings |
                     ImGuiWindowFlags_NoBackground | ImGuiWindowFlags_NoInputs |
                     ImGuiWindowFlags_NoBringToFrontOnFocus);
    ImDrawList* dl = ImGui::GetWindowDrawList();
    const ImU32 fg = rgba(220, 220, 225), dim = rgba(150, 150, 160), grid = rgba(80, 80, 90);
    if (!title_.isEmpty()) text(dl, kLeft, 4, fg, title_);
    const QRectF p = plotRect();
    const float L = static_cast<float>(p.left()), T = static_cast<float>(p.top());
    const float R = static_cast<float>(p.right()), B = static_cast<float>(p.bottom());
    if (rows_ == 0 || cols_ == 0) {
        dl->AddRect(ImVec2(L, T), ImVec2(R, B), grid);
        const float w = textWidth(message_);
        text(dl, (L + R - w) / 2, (T + B) / 2 - 7, dim, message_);
        ImGui::End();
        return;
    }

    // The map: one texture (max-pooled when several cells share a pixel or it exceeds the GL limit).
    auto pow2_at_least = [](double x) {
        int f = 1;
        while (f < x && f < (1 << 20)) f *= 2;
        return f;
    };
    // Smallest power-of-two pooling with at most one texel per pixel: every cell is sampled.
    int fx = view_.width() / p.width() > 1 ? pow2_at_least(view_.width() / p.width()) : 1;
    int fy = view_.height() / p.height() > 1 ? pow2_at_least(view_.height() / p.height()) : 1;
    while ((cols_ + fx - 1) / fx > max_texture_) fx *= 2;
    while ((rows_ + fy - 1) / fy > max_texture_) fy *= 2;
    const Level& lv = level(fx, fy);
    const ImVec2 uv0(static_cast<float>(view_.x() / (double(lv.w) * fx)), static_cast<float>(view_.y() / (double(lv.h) * fy)));
    const ImVec2 uv1(static_cast<float>(view_.right() / (double(lv.w) * fx)),
                     static_cast<float>(view_.bottom() / (double(lv.h) * fy)));
    dl->AddImage(reinterpret_cast<ImTextureID>(static_cast<intptr_t>(lv.tex)), ImVec2(L, T), ImVec2(R, B), uv0, uv1);
    dl->AddRect(ImVec2(L - 1, T - 1), ImVec2(R + 1, B + 1), grid);

    const double cw = p.width() / view_.width(), rh = p.height() / view_.height();
    auto colX = [&](double c) { return static_cast<float>(L + (c - view_.x()) * cw); };
    auto rowY = [&](double r) { return static_cast<float>(T + (r - view_.y()) * rh); };
    const int c0 = std::max(0, static_cast<int>(std::floor(view_.x())));
    const int c1 = std::min(cols_, static_cast<int>(std::ceil(view_.right())));
    const int r0 = std::max(0, static_cast<int>(std::floor(view_.y())));
    const int r1 = std::min(rows_, static_cast<int>(std::ceil(view_.bottom())));

    // Row labels on the left.
    const int rstep = static_cast<int>(niceStep(14.0 / rh));
    dl->PushClipRect(ImVec2(0, T - 7), ImVec2(L, B + 7), true);
    for (int r = (r0 / rstep) * rstep; r < r1; r += rstep) {
        const QString s = r < row_labels_.size() ? row_labels_[r] : QString::number(r);
        text(dl, L - 6 - textWidth(s), rowY(r + 0.5) - 7, dim, s);
    }
    dl->PopClipRect();
    text(dl, 4, 4, dim, row_name_);

    // Column ticks under the map (or under the strip).
    const float axis_y = B + (show_strip_ ? kStrip : 0) + 3;
    const int cstep = static_cast<int>(niceStep(56.0 / cw));
    dl->PushClipRect(ImVec2(L, B), ImVec2(R + 30, static_cast<float>(height())), true);
    for (int c = (c0 / cstep) * cstep; c < c1; c += cstep) {
        const float x = colX(c + 0.5);
        dl->AddLine(ImVec2(x, B + 1), ImVec2(x, B + 4), dim);
        text(dl, x + 2, axis_y, dim, QString::number(c));
    }
    dl->PopClipRect();
    text(dl, R - textWidth(col_name_), 4, dim, col_name_);

    // Token strip: text per token when there is room, outliers highlighted either way.
    if (show_strip_) {
        const float s0 = B + 2, s1 = B + kStrip - 2;
        dl->PushClipRect(ImVec2(L, s0), ImVec2(R, s1), true);
        dl->AddRectFilled(ImVec2(L, s0), ImVec2(R, s1), rgba(30, 30, 36));
        for (int c = c0; c < c1; ++c) {
            const float x0 = colX(c), x1 = colX(c + 1);
            const bool hot = c < static_cast<int>(strip_highlight_.size()) && strip_highlight_[c];
            if (hot) dl->AddRectFilled(ImVec2(x0, s0), ImVec2(std::max(x1, x0 + 1), s1), rgba(200, 50, 50));
            if (c == selected_.x()) dl->AddRectFilled(ImVec2(x0, s0), ImVec2(std::max(x1, x0 + 1), s1), rgba(60, 140, 255, 160));
            if (cw >= 14 && c < strip_text_.size()) {
                dl->PushClipRect(ImVec2(x0 + 1, s0), ImVec2(x1 - 1, s1), true);
                text(dl, x0 + 2, s0 + 6, hot ? rgba(255, 255, 255) : fg, strip_text_[c]);
                dl->PopClipRect();
                if (cw >= 14) dl->AddLine(ImVec2(x1, s0), ImVec2(x1, s1), rgba(55, 55, 62));
            }
        }
        dl->PopClipRect();
    }

    // Selection (column band + cell) and hover outline: a few rectangles.
    dl->PushClipRect(ImVec2(L, T), ImVec2(R, B), true);
    if (selected_.x() >= 0) {
        const float x0 = colX(selected_.x()), x1 = std::max(colX(selected_.x() + 1), x0 + 1);
        dl->AddRect(ImVec2(x0, T), ImVec2(x1, B), rgba(60, 140, 255, 200));
        const float y0 = rowY(selected_.y()), y1 = std::max(rowY(selected_.y() + 1), y0 + 1);
        dl->AddRect(ImVec2(x0 - 1, y0 - 1), ImVec2(x1 + 1, y1 + 1), rgba(80, 170, 255), 0, 0, 2);
    }
    if (hovered_.x() >= 0) {
        const float x0 = colX(hovered_.x()), x1 = std::max(colX(hovered_.x() + 1), x0 + 1);
        const float y0 = rowY(hovered_.y()), y1 = std::max(rowY(hovered_.y() + 1), y0 + 1);
        dl->AddRect(ImVec2(x0 - 1, y0 - 1), ImVec2(x1 + 1, y1 + 1), rgba(255, 255, 255));
    }
    dl->PopClipRect();

    // Colour bar (log scale) on the right.
    const float bx0 = R + 14, bx1 = R + 28;
    const int slices = 48;
    for (int i = 0; i < slices; ++i) {
        const float ya = B - (B - T) * i / slices, yb = B - (B - T) * (i + 1) / slices;
        const uint32_t ca = inferno(double(i) / slices), cb = inferno(double(i + 1) / slices);
        dl->AddRectFilledMultiColor(ImVec2(bx0, yb), ImVec2(bx1, ya), cb, cb, ca, ca);
    }
    dl->AddRect(ImVec2(bx0, T), ImVec2(bx1, B), grid);
    const LogScale scale{lo_, hi_};
    auto tick = [&](double v, bool label) {
        const float y = static_cast<float>(B - (B - T) * scale(v));
        dl->AddLine(ImVec2(bx1, y), ImVec2(bx1 + 4, y), dim);
        if (label) text(dl, bx1 + 6, y - 7, dim, fmtValue(v));
    };
    const int e0 = static_cast<int>(std::ceil(std::log10(lo_))), e1 = static_cast<int>(std::floor(std::log10(hi_)));
    const int estep = std::max(1, (e1 - e0 + 1) / 6 + ((e1 - e0 + 1) % 6 ? 1 : 0));
    for (int e = e0; e <= e1; e += estep) tick(std::pow(10.0, e), std::fabs(std::log10(hi_) - e) > 0.12);
    tick(hi_, true);
    text(dl, bx0 - 2, B + 3, dim, "log |x|");

    // Tooltip for the hovered cell.
    if (hovered_.x() >= 0 && !dragging_) {
        ImGui::BeginTooltip();
        const QByteArray u = tooltipText(hovered_.y(), hovered_.x()).toUtf8();
        ImGui::TextUnformatted(u.constData(), u.constData() + u.size());
        ImGui::EndTooltip();
    }
    ImGui::End();
}

}  // namespace studio
