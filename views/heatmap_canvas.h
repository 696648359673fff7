// The heatmap canvas: Dear ImGui drawn into a native child window (a QWindow with its own OpenGL context,
// embedded with QWidget::createWindowContainer; one ImGuiContext per canvas). Not a QOpenGLWidget: a window
// holding a QOpenGLWidget is composed through OpenGL on every update (a progress bar, a label), which with
// software OpenGL (llvmpipe) costs 10 - 40 ms per update of the whole window; with native child windows the
// rest of the window keeps Qt's raster backing store, and GL work happens only when a canvas redraws.
//
// The matrix (rows x cols, values >= 0) is colour-mapped on a log scale into ONE RGBA texture and drawn
// with a single ImGui image (nearest filtering); hover, selection, axes, the colour bar and the token
// strip are a few hundred draw-list primitives at most. When zoomed out so far that several columns
// (or rows) share a pixel, a max-pooled copy of the map is drawn instead, so a single outlier token or
// channel never vanishes between pixels; pooled copies are built lazily and cached.
//
// Interaction (handled in Qt events, drawn by ImGui): wheel zooms the columns around the cursor
// (Ctrl+wheel: rows, Shift+wheel: pans); drag pans; click selects a cell; double-click or "0" resets;
// "+"/"-" zoom; arrows pan.
#pragma once
#include <QElapsedTimer>
#include <QImage>
#include <QOpenGLFunctions>
#include <QWidget>
#include <QPoint>
#include <QRectF>
#include <QString>
#include <QStringList>

#include <functional>
#include <map>
#include <utility>
#include <vector>

struct ImGuiContext;
class QOpenGLContext;
class QWindow;

namespace studio {

class HeatmapCanvasWindow;

class HeatmapCanvas : public QWidget, protected QOpenGLFunctions {
    Q_OBJECT
public:
    explicit HeatmapCanvas(QWidget* parent = nullptr);
    ~HeatmapCanvas() override;

    // The OpenGL context the canvas draws with (3.3 core, for ImGui's renderer), as every window's default. Call it
    // before the QApplication exists (the studio's main and the GUI tests do).
    static void useDefaultSurfaceFormat();

    // values: rows x cols, row-major. The view is kept when the size is unchanged, else reset.
    void setData(int rows, int cols, std::vector<float> values);
    void clearData(const QString& message);  // empty canvas showing a message
    void setTitle(const QString& title);
    void setAxisNames(const QString& rows, const QString& cols);
    void setRowLabels(const QStringList& labels);  // default: row index
    // The token strip under the map: text per column, and which columns to highlight (outliers).
    void setTokenStrip(const QStringList& text, const std::vector<bool>& highlight);
    void setShowTokenStrip(bool on);
    // A fixed colour scale [lo, hi] (e.g. shared by two maps shown side by side); hi <= 0: from the data.
    void setFixedScale(double lo, double hi);
    // Tooltip text for a hovered cell; default "row r, col c: value".
    void setTooltipProvider(std::function<QString(int row, int col, float value)> fn) { tooltip_ = std::move(fn); }

    void setSelection(int row, int col);  // -1: none
    void setXView(double x0, double x1);  // visible columns [x0, x1)
    void resetView();
    void zoom(double factor_x, double factor_y, QPointF anchor_widget);

    int rows() const { return rows_; }
    int cols() const { return cols_; }
    float value(int row, int col) const;
    double scaleLo() const { return lo_; }
    double scaleHi() const { return hi_; }
    QRectF view() const { return view_; }  // in cells: x = columns, y = rows
    QPoint selection() const { return selected_; }  // (col, row); (-1, -1) none
    QPoint hovered() const { return hovered_; }
    QRectF plotRect() const;                        // widget coordinates of the map
    QPointF cellCenter(int row, int col) const;     // widget coordinates
    QPoint cellAt(QPointF widget_pos) const;        // (col, row) or (-1, -1)
    QString tooltipText(int row, int col) const;

    // Frame times of paintGL (CPU side, plus glFinish when syncFrames is on), in milliseconds.
    double lastFrameMs() const { return last_frame_ms_; }
    int frameCount() const { return frames_; }
    void setSyncFrames(bool on) { sync_frames_ = on; }
    // Renders one frame now (makeCurrent, paintGL, glFinish; not shown): for benchmarks.
    double renderFrameNow();
    // Renders one frame and reads it back (the canvas window is a native GL window: QWidget::grab() of an
    // enclosing widget shows it black; screenshots draw this image at the canvas' place).
    QImage grabFramebuffer();
    // Requests a redraw of the canvas window at the next frame (QWidget::update() only repaints the widget
    // under the GL window).
    void redraw();
    // Creates the canvas' GL context and ImGui state and draws one frame off-screen now (compiling the
    // shaders and uploading the font texture); otherwise the first showing does it, ~20 ms on the GUI
    // thread with software GL. Called while the window is idle, so that the first showing of a tab with
    // canvases does not stall a running job's updates.
    void prepareGl();
    // The native window the canvas draws into (input on it reaches the same handlers as on the widget).
    QWindow* canvasWindow() const;
    // The shipped font (resources/fonts/DejaVuSans.ttf) is in use, and has a glyph for code point c (for
    // tests; both false before the GL context is first made).
    bool fontLoaded() const { return font_loaded_; }
    bool hasGlyph(unsigned c) const;

signals:
    void cellHovered(int row, int col);
    void cellClicked(int row, int col);
    void xViewChanged(double x0, double x1);

protected:
    // Input reaches these from the widget (synthetic events, e.g. QTest) and from the GL window (real input).
    void mousePressEvent(QMouseEvent* e) override;
    void mouseMoveEvent(QMouseEvent* e) override;
    void mouseReleaseEvent(QMouseEvent* e) override;
    void mouseDoubleClickEvent(QMouseEvent* e) override;
    void wheelEvent(QWheelEvent* e) override;
    void leaveEvent(QEvent* e) override;
    void keyPressEvent(QKeyEvent* e) override;

private:
    friend class HeatmapCanvasWindow;
    bool makeCurrent();  // creates the context (and ImGui state) on first use; false when GL is unavailable
    void doneCurrent();
    void initializeGL();
    void paintGL();
    void renderAndSwap();  // on expose / update request of the GL window
    struct Level {
        unsigned tex = 0;
        int w = 0, h = 0;  // texels
    };
    void clampView();
    void emitView();
    const Level& level(int fx, int fy);  // pooled by fx columns, fy rows (powers of two); GL context current
    void dropTextures();
    void drawFrame();

    HeatmapCanvasWindow* window_ = nullptr;  // owned by the container (a child widget)
    QWidget* container_ = nullptr;
    QOpenGLContext* gl_ = nullptr;  // child QObject, deleted explicitly in the destructor
    ImGuiContext* ctx_ = nullptr;
    int rows_ = 0, cols_ = 0;
    std::vector<float> values_;
    double lo_ = 1e-3, hi_ = 1;
    double fixed_lo_ = 0, fixed_hi_ = 0;
    QString title_, row_name_ = "row", col_name_ = "column", message_ = "No data";
    QStringList row_labels_, strip_text_;
    std::vector<bool> strip_highlight_;
    bool show_strip_ = false;
    std::function<QString(int, int, float)> tooltip_;
    std::map<std::pair<int, int>, Level> levels_;
    std::vector<unsigned> stale_textures_;
    int max_texture_ = 4096;
    QRectF view_;
    QPoint selected_{-1, -1}, hovered_{-1, -1};
    QPointF mouse_{-1, -1};
    QPointF press_pos_;
    QRectF press_view_;
    bool dragging_ = false, pressed_ = false;
    double last_frame_ms_ = 0;
    int frames_ = 0;
    bool sync_frames_ = false;
    bool font_loaded_ = false;
    QElapsedTimer clock_;
    double last_time_ = 0;
};

}  // namespace studio
