// The heatmap canvas on its own: a 32 x 4096 map (a 7B-class model's layers x a long text) renders as
// one texture fast enough to stay interactive, a single outlier cell stays visible when 4096 tokens are
// squeezed into ~1000 pixels (max-pooled copies), and the hover/zoom arithmetic is exact.
#include <QApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QSignalSpy>
#include <QTest>
#include <QWheelEvent>
#include <QWindow>

#include <algorithm>
#include <random>

#include "gui_test_setup.h"
#include "heatmap_canvas.h"

using studio::HeatmapCanvas;

class TestHeatmapCanvas : public QObject {
    Q_OBJECT
    static std::vector<float> noise(int rows, int cols) {
        std::mt19937 rng(7);
        std::lognormal_distribution<float> d(0.f, 0.6f);
        std::vector<float> v(size_t(rows) * cols);
        for (float& x : v) x = d(rng);
        return v;
    }

private slots:
    void largeMapIsFastAndKeepsASingleOutlierVisible() {
        HeatmapCanvas c;
        c.resize(1200, 600);
        c.show();
        QVERIFY(QTest::qWaitForWindowExposed(&c));
        const int R = 32, C = 4096;
        std::vector<float> v = noise(R, C);
        const int hot_row = 17, hot_col = 2501;
        v[size_t(hot_row) * C + hot_col] = 5000.f;  // one massive activation
        c.setData(R, C, v);
        QCOMPARE(c.rows(), R);
        QCOMPARE(c.cols(), C);
        QCOMPARE(c.scaleHi(), 5000.0);

        // Zoomed out, ~3.4 tokens share a pixel: the hot cell's column must still show a bright pixel.
        const double first = c.renderFrameNow();  // colour-maps and uploads the (pooled) texture
        qInfo("32 x 4096 heatmap: first frame after new data (colour map + upload) %.2f ms", first);
        const QImage img = c.grabFramebuffer();
        const QPointF centre = c.cellCenter(hot_row, hot_col);
        const double dpr = c.devicePixelRatioF();
        int best = 0;
        for (int dx = -2; dx <= 2; ++dx) {
            const QColor px = img.pixelColor(int((centre.x() + dx) * dpr), int(centre.y() * dpr));
            best = std::max(best, px.red() + px.green() + px.blue());
        }
        QVERIFY2(best > 600, qPrintable(QString("brightest pixel near the outlier: %1").arg(best)));

        // Frame time, including glFinish, averaged over frames with a moving hover.
        QElapsedTimer t;
        double total = 0, worst = 0;
        const int frames = 30;
        for (int i = 0; i < frames; ++i) {
            QTest::mouseMove(&c, c.cellCenter(i % R, (i * 131) % C).toPoint());
            const double ms = c.renderFrameNow();
            total += ms;
            worst = std::max(worst, ms);
        }
        qInfo("32 x 4096 heatmap at 1200 x 600: mean %.2f ms, worst %.2f ms per frame", total / frames, worst);
        QVERIFY2(total / frames < 50, "a frame of the 32 x 4096 map must take well under 50 ms");
    }

    void cellArithmeticAndZoomAreExact() {
        HeatmapCanvas c;
        c.resize(800, 400);
        c.show();
        QVERIFY(QTest::qWaitForWindowExposed(&c));
        c.setData(4, 100, noise(4, 100));
        for (int r : {0, 3})
            for (int col : {0, 57, 99}) QCOMPARE(c.cellAt(c.cellCenter(r, col)), QPoint(col, r));
        QCOMPARE(c.cellAt(QPointF(1, 1)), QPoint(-1, -1));  // outside the plot
        const QPointF anchor = c.cellCenter(1, 40);
        c.zoom(0.5, 1, anchor);
        QCOMPARE(c.view().width(), 50.0);
        QCOMPARE(c.cellAt(anchor), QPoint(40, 1));  // zoom keeps the cell under the cursor
        c.zoom(1e-3, 1, anchor);
        QCOMPARE(c.view().width(), 4.0);            // at most 4 columns
        c.zoom(1e6, 1, anchor);
        QCOMPARE(c.view(), QRectF(0, 0, 100, 4));   // never beyond the data
        c.clearData("empty");
        QCOMPARE(c.rows(), 0);
        QCOMPARE(c.cellAt(QPointF(400, 200)), QPoint(-1, -1));
        c.renderFrameNow();  // an empty canvas draws its message without trouble
    }

    void twoCanvasesHaveTheirOwnImGuiContexts() {
        HeatmapCanvas a, b;
        a.resize(300, 200);
        b.resize(300, 200);
        a.show();
        b.show();
        QVERIFY(QTest::qWaitForWindowExposed(&a));
        QVERIFY(QTest::qWaitForWindowExposed(&b));
        a.setData(2, 2, {1, 2, 3, 4});
        b.setData(2, 2, {4, 3, 2, 1});
        a.renderFrameNow();
        b.renderFrameNow();
        a.renderFrameNow();
        QVERIFY(a.frameCount() >= 2 && b.frameCount() >= 1);
    }

    // The canvas draws into a native child window: input delivered to that window (as the window system
    // delivers real input) reaches the canvas' handlers: hover, click, wheel zoom, drag pan, double-click.
    void inputOnTheNativeWindowReachesTheCanvas() {
        HeatmapCanvas c;
        c.resize(800, 400);
        c.show();
        QVERIFY(QTest::qWaitForWindowExposed(&c));
        QWindow* win = c.canvasWindow();
        QVERIFY(win);
        QTRY_VERIFY(win->isExposed());
        c.activateWindow();  // Xvfb has no window manager to do it
        QVERIFY(QTest::qWaitForWindowActive(&c));
        QCOMPARE(win->size(), c.size());
        c.setData(4, 100, noise(4, 100));
        QTRY_VERIFY(c.frameCount() > 0);  // the window draws on its own (expose / update request)
        const int frames = c.frameCount();
        QSignalSpy hovered(&c, &HeatmapCanvas::cellHovered);
        QSignalSpy clicked(&c, &HeatmapCanvas::cellClicked);
        QTest::mouseMove(win, c.cellCenter(2, 30).toPoint());
        QTRY_COMPARE(c.hovered(), QPoint(30, 2));
        QVERIFY(hovered.count() >= 1);
        QTRY_VERIFY(c.frameCount() > frames);  // the hover redraws
        QTest::mouseClick(win, Qt::LeftButton, {}, c.cellCenter(1, 60).toPoint());
        QTRY_COMPARE(clicked.count(), 1);
        QCOMPARE(c.selection(), QPoint(60, 1));
        const QPointF at = c.plotRect().center();
        QWheelEvent wheel(at, win->mapToGlobal(at), QPoint(), QPoint(0, 120), Qt::NoButton, Qt::NoModifier,
                          Qt::NoScrollPhase, false);
        QCoreApplication::sendEvent(win, &wheel);
        QCOMPARE(c.view().width(), 80.0);
        const double x0 = c.view().x();
        QTest::mousePress(win, Qt::LeftButton, {}, at.toPoint());
        QTest::mouseMove(win, (at + QPointF(-100, 0)).toPoint());
        QTest::mouseRelease(win, Qt::LeftButton, {}, (at + QPointF(-100, 0)).toPoint());
        QTRY_VERIFY(c.view().x() > x0);  // dragged left: the view moved right
        QCOMPARE(clicked.count(), 1);    // a drag is not a click
        c.clearFocus();
        QVERIFY(!c.hasFocus());
        QTest::mouseDClick(win, Qt::LeftButton, {}, at.toPoint());
        QTRY_COMPARE(c.view(), QRectF(0, 0, 100, 4));
        // A click on the canvas gives it the keyboard focus; keys typed into the top-level window reach it.
        QVERIFY(c.hasFocus());
        QTest::keyClick(c.windowHandle(), Qt::Key_Plus);
        QCOMPARE(c.view().width(), 80.0);
        QTest::keyClick(win, Qt::Key_0);  // and keys the canvas window itself receives
        QCOMPARE(c.view().width(), 100.0);
    }

    // Token text as tokenizers give it: SentencePiece's "▁", byte-level BPE's "Ġ"/"Ċ", Cyrillic, Greek. The
    // shipped DejaVu Sans has the glyphs (ImGui draws '?' for a missing one), and "▁" is not drawn as '?'.
    void tokenStripDrawsNonLatinTokenText() {
        HeatmapCanvas c;
        c.resize(900, 200);
        c.show();
        QVERIFY(QTest::qWaitForWindowExposed(&c));
        const QStringList tokens{QString::fromUtf8("\u2581Once"), QString::fromUtf8("\u2581"), "?",
                                 QString::fromUtf8("\u0120the\u010A"), QString::fromUtf8("\u043F\u0440\u0438\u0432\u0435\u0442"),
                                 QString::fromUtf8("\u03B1\u03B2\u03B3")};
        c.setData(2, int(tokens.size()), noise(2, int(tokens.size())));
        c.setTokenStrip(tokens, std::vector<bool>(tokens.size(), false));
        c.setShowTokenStrip(true);
        c.renderFrameNow();
        QVERIFY2(c.fontLoaded(), "resources/fonts/DejaVuSans.ttf was not loaded");
        for (unsigned u : {0x2581u, 0x0120u, 0x010Au, 0x043Fu, 0x03B1u, 0x2019u, 0x00E9u})
            QVERIFY2(c.hasGlyph(u), qPrintable(QString("no glyph for U+%1").arg(u, 4, 16, QChar('0'))));
        QVERIFY(!c.hasGlyph(0x4E00));  // CJK is not in the ranges: drawn as '?'
        const QImage img = c.grabFramebuffer();
        QDir().mkpath(CUSHION_SCREENSHOT_DIR);
        QVERIFY(img.save(QString(CUSHION_SCREENSHOT_DIR) + "/canvas_token_strip.png"));
        // The strip cells of "▁" (column 1) and "?" (column 2) differ.
        const double dpr = c.devicePixelRatioF();
        const QRectF p = c.plotRect();
        const int w = int(p.width() / tokens.size() * dpr) - 4, h = int(28 * dpr);
        auto cell = [&](int col) {
            const double x0 = c.cellCenter(0, col).x() - p.width() / tokens.size() / 2;
            return img.copy(int(x0 * dpr) + 2, int(p.bottom() * dpr), w, h);
        };
        QVERIFY(cell(1) != cell(2));
    }
};

int main(int argc, char** argv) {
    GuiTestSetup setup;  // scratch settings, the studio's OpenGL format
    QApplication app(argc, argv);
    TestHeatmapCanvas t;
    return QTest::qExec(&t, argc, argv);
}

#include "test_heatmap_canvas.moc"
