// The prompt editor: type or load a text; after a short pause (debounce) it asks for a probe.
#pragma once
#include <QWidget>

class QLabel;
class QPlainTextEdit;
class QTimer;

namespace studio {

class PromptPanel : public QWidget {
    Q_OBJECT
public:
    explicit PromptPanel(QWidget* parent = nullptr);
    QString text() const;
    void setText(const QString& text);  // triggers the debounce like typing
    void setStatus(const QString& s);
    QString status() const;
    void setDebounceMs(int ms);
    int debounceMs() const;
    QPlainTextEdit* editor() const { return edit_; }

signals:
    void promptChanged(const QString& text);  // after the debounce
    void loadTextRequested();

private:
    QPlainTextEdit* edit_;
    QLabel* status_;
    QTimer* debounce_;
};

}  // namespace studio
