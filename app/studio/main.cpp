// cushion-studio: the desktop app. Usage: cushion-studio [MODEL] [--no-restore]
#include <QApplication>
#include <QCommandLineParser>
#include <QSurfaceFormat>
#include <QTimer>

#include "main_window.h"

int main(int argc, char** argv) {
    // The ImGui canvas needs an OpenGL 3.3 core context: set it before QApplication exists.
    QSurfaceFormat fmt;
    fmt.setVersion(3, 3);
    fmt.setProfile(QSurfaceFormat::CoreProfile);
    fmt.setDepthBufferSize(0);
    fmt.setStencilBufferSize(0);
    QSurfaceFormat::setDefaultFormat(fmt);

    QApplication app(argc, argv);
    QApplication::setOrganizationName("CushionCache");
    QApplication::setApplicationName("cushion-studio");
    QApplication::setApplicationVersion(CUSHION_VERSION);
    QApplication::setDesktopFileName("cushion-studio");

    QCommandLineParser cli;
    cli.setApplicationDescription("CushionCache Studio: see activation outliers, quantize, search a cushion prefix.");
    cli.addHelpOption();
    cli.addVersionOption();
    cli.addPositionalArgument("model", "A model to open: llama2.c .bin, .gguf or a Hugging Face directory.");
    QCommandLineOption no_restore("no-restore", "Do not reopen the last model and prompt.");
    cli.addOption(no_restore);
    cli.process(app);

    studio::MainWindow::Options opts;
    opts.restore_session = !cli.isSet(no_restore) && cli.positionalArguments().isEmpty();
    studio::MainWindow w(opts);
    w.show();
    if (!cli.positionalArguments().isEmpty()) {
        const QString path = cli.positionalArguments().first();
        QTimer::singleShot(0, &w, [&w, path] { w.openModel(path); });
    }
    return app.exec();
}
