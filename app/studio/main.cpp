// cushion-studio: the desktop app. Usage: cushion-studio [MODEL | SESSION.cushionstudio] [--no-restore]
#include <QApplication>
#include <QCommandLineParser>
#include <QTimer>

#include "base/threads.h"
#include "heatmap_canvas.h"
#include "main_window.h"

namespace {

void setup(QCoreApplication&) {
    QCoreApplication::setOrganizationName("CushionCache");
    QCoreApplication::setApplicationName("cushion-studio");
    QCoreApplication::setApplicationVersion(CUSHION_VERSION);
}

void addOptions(QCommandLineParser& cli) {
    cli.setApplicationDescription("CushionCache Studio: see activation outliers, quantize, search a cushion prefix.");
    cli.addHelpOption();
    cli.addVersionOption();
    cli.addPositionalArgument("model", "A model to open: llama2.c .bin, .gguf or a Hugging Face directory; or a "
                                       "session file (.cushionstudio) saved by File > Save session.");
    cli.addOption(QCommandLineOption("no-restore", "Do not reopen the last model and prompt."));
}

}  // namespace

int main(int argc, char** argv) {
    // The ImGui canvas needs an OpenGL 3.3 core context: set it before QApplication exists.
    studio::HeatmapCanvas::useDefaultSurfaceFormat();

    // --help and --version need no display: answer them with a QCoreApplication.
    for (int i = 1; i < argc; ++i) {
        const QString a = argv[i];
        if (a == "-h" || a == "--help" || a == "--help-all" || a == "-v" || a == "--version") {
            QCoreApplication core(argc, argv);
            setup(core);
            QCommandLineParser cli;
            addOptions(cli);
            cli.process(core);
            return 0;
        }
    }

    // As the CLI (core/base/threads.h): idle OpenMP threads sleep instead of spinning against the GUI thread and
    // the workers (re-executes once with OMP_WAIT_POLICY=PASSIVE unless the user set it), every core for libtorch.
    cushion::relaunch_with_passive_openmp(argv);
    cushion::use_all_cores();

    QApplication app(argc, argv);
    setup(app);
    QApplication::setDesktopFileName("cushion-studio");

    QCommandLineParser cli;
    addOptions(cli);
    cli.process(app);
    const QCommandLineOption no_restore("no-restore");

    studio::MainWindow::Options opts;
    opts.restore_session = !cli.isSet(no_restore) && cli.positionalArguments().isEmpty();
    studio::MainWindow w(opts);
    w.show();
    if (!cli.positionalArguments().isEmpty()) {
        const QString path = cli.positionalArguments().first();
        QTimer::singleShot(0, &w, [&w, path] {
            if (path.endsWith(".cushionstudio"))
                w.openSession(path);
            else
                w.openModel(path);
        });
    }
    return app.exec();
}
