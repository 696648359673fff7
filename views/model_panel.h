// The model side panel: what is loaded (architecture, sizes, memory), where it runs (device, dtype), and
// the load in progress with a Cancel button.
#pragma once
#include <QWidget>

#include "studio_types.h"

class QComboBox;
class QLabel;
class QProgressBar;
class QPushButton;
class QTreeWidget;

namespace studio {

class ModelPanel : public QWidget {
    Q_OBJECT
public:
    explicit ModelPanel(QWidget* parent = nullptr);
    void setDevices(const QStringList& devices);
    QString device() const;
    QString dtype() const;
    void setDevice(const QString& d);
    void setDtype(const QString& d);

    void setLoading(const QString& path);
    void setProgress(double fraction, const QString& what);
    void setModel(const ModelInfoPtr& info);
    void setFailed(const QString& message);
    void setCancelled();
    QString summary() const;  // one line: what is loaded (tests, status)
    QTreeWidget* details() const { return tree_; }

signals:
    void openFileRequested();
    void openDirectoryRequested();
    void defaultRequested();
    void reloadRequested();  // same model, the device/dtype now chosen
    void cancelRequested();

private:
    void setBusy(bool busy);
    QLabel* path_;
    QLabel* state_;
    QComboBox* device_;
    QComboBox* dtype_;
    QPushButton* apply_;
    QPushButton* cancel_;
    QProgressBar* bar_;
    QTreeWidget* tree_;
    QLabel* warnings_;
    ModelInfoPtr info_;
};

}  // namespace studio
